"""A commit to a registered model: training it, collecting the model, MLflow,
promotion gates and the champion alias."""
