"""Serving registered champions: sandboxed model workers behind an HTTP API.

Modules: ``validation`` (request bodies vs the model's columns), ``worker`` and
``modelworker`` (the host's and the sandbox's ends of a model worker's pipe),
``launcher`` (environment, private copy, sandbox start), ``service`` (one
model: hot swap, restart), ``manager`` (all models, registry polling),
``predictionlog`` (batched logging to the store), ``http`` and ``form`` (the
routes; FastAPI only there).
"""
