"""Translate a text file (or stdin) with a trained model directory: one output line per input line.

The same as ``nmt translate`` (``nmt translate --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("translate")
