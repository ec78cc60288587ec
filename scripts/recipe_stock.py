"""Stock forecasting with an LSTM, one day ahead, next to the naive forecast (chapter 7, example 3).

python scripts/recipe_stock.py                            # MSFT 2012-2017 from pmdarima; window, full and truncated BPTT
python scripts/recipe_stock.py train=smoke                # a few seconds
python scripts/recipe_stock.py train.bptt=[truncated] train.tbptt_steps=50
python scripts/recipe_stock.py data.source=csv data.path=prices.csv data.start=2015-01-01 data.horizon=5
"""

from nmt.cli import CONF_DIR, hydra_main
from nmt.recipes.config import StockConfig
from nmt.recipes.stock import run_stock


@hydra_main("config", StockConfig, config_dir=CONF_DIR / "recipe" / "stock")
def main(cfg: StockConfig) -> None:
    run_stock(cfg)


if __name__ == "__main__":
    main()
