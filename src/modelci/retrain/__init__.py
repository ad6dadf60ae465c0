"""Continuous training: retrain a repository's default branch and compare it fairly."""
