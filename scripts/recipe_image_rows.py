"""Image classification with an RNN reading one pixel row per step (chapter 7, example 2).

python scripts/recipe_image_rows.py                      # Fashion-MNIST, basic 64-unit RNN
python scripts/recipe_image_rows.py train=smoke          # a few seconds
python scripts/recipe_image_rows.py model.cell=lstm data.source=cifar10   # the book's CIFAR-10 (online)
"""

from nmt.cli import CONF_DIR, hydra_main
from nmt.recipes.config import ImageRowsConfig
from nmt.recipes.image_rows import run_image_rows


@hydra_main("config", ImageRowsConfig, config_dir=CONF_DIR / "recipe" / "image_rows")
def main(cfg: ImageRowsConfig) -> None:
    run_image_rows(cfg)


if __name__ == "__main__":
    main()
