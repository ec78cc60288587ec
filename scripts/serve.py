"""Serve a trained model directory: REST API (POST /translate, GET /health, GET /info) and a page at /.

The same as ``nmt serve`` (``nmt serve --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("serve")
