"""Train a model into ``run_dir`` (the model directory): ``python scripts/train.py [overrides]``."""

from nmt.cli import hydra_main
from nmt.config import Config
from nmt.train.trainer import train


@hydra_main("config", Config)
def main(cfg: Config) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
