"""Stock forecasting with an LSTM, one day ahead, next to the naive forecast (chapter 7, example 3).

python scripts/recipe_stock.py                            # MSFT 2012-2017 from pmdarima; window, full and truncated BPTT
python scripts/recipe_stock.py train=smoke                # a few seconds
python scripts/recipe_stock.py train.bptt=[truncated] train.tbptt_steps=50
python scripts/recipe_stock.py data.source=csv data.path=prices.csv data.start=2015-01-01 data.horizon=5

The same as ``nmt recipe stock`` (``nmt recipe stock --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("recipe stock")
