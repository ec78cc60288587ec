"""Sentiment analysis with a GRU (chapter 7, example 1).

python scripts/recipe_sentiment.py                          # Rotten Tomatoes (offline), writes runs/recipe-sentiment
python scripts/recipe_sentiment.py train=smoke              # well under a minute
python scripts/recipe_sentiment.py model.bidirectional=true model.cell=lstm
python scripts/recipe_sentiment.py data.source=imdb         # the book's IMDB (online)
python scripts/recipe_sentiment.py predict "a wonderful film" "dull and lifeless"   # uses the saved model

The same as ``nmt recipe sentiment`` (``nmt recipe sentiment --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("recipe sentiment")
