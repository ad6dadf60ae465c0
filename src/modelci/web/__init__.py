"""The dashboard: server-rendered pages on the API's app, and who may see them."""
