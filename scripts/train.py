"""Train a model into ``run_dir`` (the model directory): ``python scripts/train.py [overrides]``.

The same as ``nmt train`` (``nmt train --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("train")
