"""Prepare a corpus for training: clean, train the tokenizer, tokenize, cache; print a summary table.

python scripts/prepare_data.py                       # the offline default: Bible en→fr
python scripts/prepare_data.py data=text data.text.train=corpus/train data.text.dev=corpus/dev

The same as ``nmt prepare`` (``nmt prepare --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("prepare")
