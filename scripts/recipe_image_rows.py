"""Image classification with an RNN reading one pixel row per step (chapter 7, example 2).

python scripts/recipe_image_rows.py                      # Fashion-MNIST, basic 64-unit RNN
python scripts/recipe_image_rows.py train=smoke          # a few seconds
python scripts/recipe_image_rows.py model.cell=lstm data.source=cifar10   # the book's CIFAR-10 (online)

The same as ``nmt recipe image_rows`` (``nmt recipe image_rows --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("recipe image_rows")
