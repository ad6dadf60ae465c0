"""The repository contract and how its code runs: ``modelci.yaml``, checkouts, uv
environments, the bubblewrap sandbox and reading what a run wrote."""
