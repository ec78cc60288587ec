"""Attention heatmaps (PNG/SVG) from a model directory and sentences, or from a dumped attention file.

The same as ``nmt visualize`` (``nmt visualize --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("visualize")
