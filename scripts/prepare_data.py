"""Prepare a corpus for training: clean, train the tokenizer, tokenize, cache; print a summary table.

python scripts/prepare_data.py                       # the offline default: Bible en→fr
python scripts/prepare_data.py data=text data.text.train=corpus/train data.text.dev=corpus/dev
"""

from pathlib import Path

from nmt.cli import hydra_main
from nmt.config import Config
from nmt.data import format_summary, prepare_data


@hydra_main("config", Config)
def main(cfg: Config) -> None:
    prepared = prepare_data(cfg, Path(cfg.run_dir))
    print(format_summary(prepared.summary))
    print(f"details: {Path(cfg.run_dir) / 'summary.json'}")


if __name__ == "__main__":
    main()
