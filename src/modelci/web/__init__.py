"""The dashboard: pages, sign-in and who may see and do what (issue 14).

Route modules (FastAPI, Jinja2) sit beside pure modules: ``identity`` (the
viewer and their access), ``sessions`` (signed cookies, CSRF, sealed tokens)
and ``permissions`` (a person's repositories, asked of GitHub, cached).
"""
