"""Translate a text file (or stdin) with a trained model directory: one output line per input line."""

from nmt.cli import hydra_main
from nmt.config import TranslateConfig
from nmt.translate import translate_file


@hydra_main("translate", TranslateConfig)
def main(cfg: TranslateConfig) -> None:
    translate_file(cfg)


if __name__ == "__main__":
    main()
