"""Sentiment analysis with a GRU (chapter 7, example 1).

python scripts/recipe_sentiment.py                          # Rotten Tomatoes (offline), writes runs/recipe-sentiment
python scripts/recipe_sentiment.py train=smoke              # well under a minute
python scripts/recipe_sentiment.py model.bidirectional=true model.cell=lstm
python scripts/recipe_sentiment.py data.source=imdb         # the book's IMDB (online)
python scripts/recipe_sentiment.py predict "a wonderful film" "dull and lifeless"   # uses the saved model
"""

import sys

from nmt.cli import CONF_DIR, hydra_main
from nmt.recipes.config import SentimentConfig
from nmt.recipes.sentiment import predict_argv, run_sentiment


@hydra_main("config", SentimentConfig, config_dir=CONF_DIR / "recipe" / "sentiment")
def main(cfg: SentimentConfig) -> None:
    run_sentiment(cfg)


if __name__ == "__main__":
    sys.argv = predict_argv(sys.argv)
    main()
