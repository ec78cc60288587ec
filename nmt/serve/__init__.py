"""Serving: a REST API with micro-batching and a web page that draws the attention (``scripts/serve.py``)."""
