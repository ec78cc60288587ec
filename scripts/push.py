"""Upload a model directory to the Hugging Face hub, with a generated model card.

python scripts/push.py model_dir=runs/bible-en-fr repo_id=OWNER/NAME [private=true] [revision=BRANCH]

The same as ``nmt push`` (``nmt push --help``: its defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("push")
