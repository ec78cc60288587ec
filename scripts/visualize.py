"""Attention heatmaps (PNG/SVG) from a model directory and sentences, or from a dumped attention file."""

from nmt.cli import hydra_main
from nmt.config import VisualizeConfig
from nmt.visualize import visualize


@hydra_main("visualize", VisualizeConfig)
def main(cfg: VisualizeConfig) -> None:
    visualize(cfg)


if __name__ == "__main__":
    main()
