"""Add the vocabulary shortlist's table (``lexicon.npz``) to an existing model directory, built from its training
data (training writes it itself; this is for directories trained before it did).

python scripts/lexicon.py model_dir=runs/bible-en-fr [per_source=100] [max_pairs=200000]

The same as ``nmt lexicon`` (``nmt lexicon --help``: its defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("lexicon")
