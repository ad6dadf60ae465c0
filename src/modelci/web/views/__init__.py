"""The dashboard's route modules, one per page (FastAPI)."""
