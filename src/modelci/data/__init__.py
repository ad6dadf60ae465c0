"""Data in DVC: fetching exactly a commit's data, with credentials only the server holds.

``remotes`` (the server's allow-list, caps and credentials per repository),
``dvcrepo`` (a checkout's DVC layout, read safely), ``tool`` (modelci's pinned
DVC as the sandbox runs it), ``fetch`` (the sandboxed ``dvc pull`` into a work
dir, through one cache per repository).
"""
