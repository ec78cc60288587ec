"""Recipe 3: one-step-ahead stock forecasting with an LSTM (the book's Listings 7-8 … 7-12 and Figure 7-9).

The series is the mean of open/high/low/close per day, MinMax-scaled with the range of the TRAIN part only (the
book fits the scaler on all days, which leaks the test range). The split is chronological: the first 70 % of days
train, the last 30 % test. Every forecast is scored in dollars next to the naive forecast ``price[t+h] = price[t]``.

Three ways of training are compared (``train.bptt``):

* ``window``: the book's set-up, independent windows of ``data.window`` past prices, state reset per window;
* ``full``: the whole training period as ONE sequence, back-propagated through all of it (one update per pass);
* ``truncated``: the same sequence cut into chunks of k = ``train.tbptt_steps`` steps. The hidden state flows
  from chunk to chunk in the forward pass, but is detached, so gradients stop at the chunk boundary.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from nmt.errors import NmtError
from nmt.package_data import package_file
from nmt.recipes.common import Batch, fit, make_rnn, setup, tensor_batches, write_metrics
from nmt.recipes.config import Bptt, Cell, PriceSource, StockConfig, StockModelConfig, Target
from nmt.recipes.metrics import naive_forecast, rmse
from nmt.recipes.plots import plot_forecast

log = logging.getLogger(__name__)

PRICE_COLUMNS = ("Open", "High", "Low", "Close")
BOOK_RMSE = 3.52  # Listing 7-12, on MSFT 2012-2017 with the scaler fitted on all days


@dataclass
class PriceSeries:
    dates: list[str]  # ISO dates, increasing
    price: np.ndarray  # float64 [days]: (open + high + low + close) / 4
    report: dict = field(default_factory=dict)  # rows read, kept, dropped by reason


def pmdarima_msft_path() -> Path:
    """``msft.tar.gz`` inside the installed pmdarima package (read as a file; pmdarima is never imported)."""
    return package_file(
        "pmdarima",
        "datasets/data/msft.tar.gz",
        "the MSFT prices",
        "`pip install --no-deps pmdarima==2.1.1`, or set data.path to a msft.tar.gz / data.source=csv",
    )


def read_tar_csv(path: Path, member: str = "msft.csv") -> str:
    """The text of ``member`` (or the only .csv) inside a tar(.gz) archive."""
    if not path.is_file():
        raise NmtError(f"{path}: price archive not found (set data.path)")
    try:
        with tarfile.open(path, "r:*") as tar:
            names = [m.name for m in tar.getmembers() if m.isfile() and m.name.endswith(".csv")]
            name = member if member in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise NmtError(f"{path}: no {member} (or single .csv) inside; members: {names}")
            return tar.extractfile(name).read().decode("utf-8")  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, UnicodeDecodeError) as exc:
        raise NmtError(f"{path}: cannot read the tar archive ({exc})") from exc


def parse_prices(text: str, source: str, start: str, end: str) -> PriceSeries:
    """Rows of a Date/Open/High/Low/Close CSV between ``start`` and ``end`` (inclusive), as the mean price.

    Rows with an unparsable date or price (Yahoo writes ``null``) are dropped and counted; so are repeated dates.
    """
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise NmtError(f"data.start={start!r} / data.end={end!r}: dates must be YYYY-MM-DD") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("Date", *PRICE_COLUMNS) if c not in (reader.fieldnames or [])]
    if missing:
        raise NmtError(f"{source}: missing column(s) {missing}; the header is {reader.fieldnames}")
    rows: dict[date, float] = {}
    dropped: Counter[str] = Counter()
    total = 0
    for line, row in enumerate(reader, start=2):
        total += 1
        try:
            day = date.fromisoformat(row["Date"].strip())
        except (ValueError, AttributeError):
            dropped["bad date"] += 1
            log.debug("%s:%d: bad date %r", source, line, row["Date"])
            continue
        if not first <= day <= last:
            dropped["outside dates"] += 1
            continue
        try:
            values = [float(row[c]) for c in PRICE_COLUMNS]
        except (TypeError, ValueError):
            dropped["bad price"] += 1
            continue
        if not all(math.isfinite(v) for v in values):
            dropped["bad price"] += 1
            continue
        if day in rows:
            dropped["repeated date"] += 1
            continue
        rows[day] = sum(values) / len(values)
    days = sorted(rows)
    if not days:
        raise NmtError(f"{source}: no usable rows between {start} and {end} ({dict(dropped)} dropped)")
    report = {
        "rows": total,
        "kept": len(days),
        "dropped": dict(dropped),
        "first": str(days[0]),
        "last": str(days[-1]),
    }
    return PriceSeries([d.isoformat() for d in days], np.array([rows[d] for d in days]), report)


def load_prices(cfg: StockConfig) -> PriceSeries:
    data = cfg.data
    if data.source == PriceSource.csv:
        if data.path is None:
            raise NmtError("data.source=csv needs data.path=FILE.csv (columns Date, Open, High, Low, Close)")
        path = Path(data.path)
        if not path.is_file():
            raise NmtError(f"{path}: price CSV not found (data.path)")
        text = path.read_text(encoding="utf-8")
    else:
        path = Path(data.path) if data.path else pmdarima_msft_path()
        text = read_tar_csv(path)
    return parse_prices(text, str(path), data.start, data.end)


def chronological_split(n: int, test_fraction: float) -> int:
    """Days in the train part: the test part is the last ``ceil(test_fraction * n)`` days (sklearn's rounding)."""
    if not 0 < test_fraction < 1:
        raise NmtError(f"data.test_fraction={test_fraction} must lie strictly between 0 and 1")
    return n - math.ceil(test_fraction * n)


@dataclass
class MinMaxScaler:
    """x' = (x - lo) / (hi - lo): the train part maps onto [0, 1]; test values may fall outside."""

    lo: float
    hi: float

    @classmethod
    def fit(cls, values: np.ndarray) -> MinMaxScaler:
        lo, hi = float(np.min(values)), float(np.max(values))
        return cls(lo, hi if hi > lo else lo + 1.0)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x) - self.lo) / (self.hi - self.lo)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) * (self.hi - self.lo) + self.lo


class Forecaster(nn.Module):
    """RNN over prices, a linear read-out at every step."""

    def __init__(self, cfg: StockModelConfig) -> None:
        super().__init__()
        self.rnn = make_rnn(Cell(cfg.cell), 1, cfg.hidden_size, cfg.layers)
        self.out = nn.Linear(cfg.hidden_size, 1)

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, object]:
        """x ``[batch, steps, 1]`` (+ state) → one output per step ``[batch, steps]``, final state."""
        outputs, state = self.rnn(x, state)  # [batch, steps, hidden]
        return self.out(outputs).squeeze(-1), state


class LastStep(nn.Module):
    """The book's window model: the state starts at zero for every window; only the last step's output counts."""

    def __init__(self, model: Forecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """x ``[batch, window, 1]`` → ``[batch]``."""
        return self.model(x)[0][:, -1]


def detach_state(state):
    """The same hidden state, cut from the graph that produced it (``(h, c)`` for an LSTM)."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class CarriedState(nn.Module):
    """Truncated BPTT: successive calls continue one long sequence.

    The state is passed on, so the forward computation is that of the whole sequence, but it is DETACHED: the
    backward pass of chunk i stops at the chunk's first step instead of running through all earlier chunks.
    """

    def __init__(self, model: Forecaster) -> None:
        super().__init__()
        self.model = model
        self.state = None

    def reset(self) -> None:
        self.state = None

    def forward(self, x: Tensor) -> Tensor:
        """x ``[1, k, 1]`` (the next k steps) → ``[1, k]``."""
        out, state = self.model(x, self.state)
        self.state = detach_state(state)
        return out


def gradient_reach(truncated: bool, length: int = 40, steps: int = 10, seed: int = 0) -> np.ndarray:
    """``|d loss / d x_t|`` for t = 0 … length-1, where the loss is the LAST chunk's outputs of a random LSTM run
    over one sequence in chunks of ``steps``: zero before that chunk with truncated BPTT, not with full BPTT.
    """
    torch.manual_seed(seed)
    carried = CarriedState(Forecaster(StockModelConfig(hidden_size=8)))
    x = torch.randn(1, length, 1, requires_grad=True)
    if truncated:
        for start in range(0, length, steps):
            out = carried(x[:, start : start + steps])
        last = out
    else:
        last = carried(x)[:, -steps:]
    last.sum().backward()
    return x.grad[0, :, 0].abs().numpy()  # type: ignore[index]


def window_samples(scaled: np.ndarray, targets: np.ndarray, window: int, horizon: int) -> np.ndarray:
    """For each target day t the inputs ``scaled[t-h-w+1 .. t-h]``: ``[len(targets), window, 1]``."""
    offsets = np.arange(-horizon - window + 1, -horizon + 1)
    return scaled[targets[:, None] + offsets][..., None].astype(np.float32)


def sequence_chunks(model: CarriedState, x: Tensor, y: Tensor, steps: int) -> Iterator[Batch]:
    """One pass over the long sequence ``x [1, T, 1]`` / ``y [1, T]`` in chunks of ``steps``, from a zero state."""
    model.reset()
    for start in range(0, x.shape[1], steps):
        yield (x[:, start : start + steps],), y[:, start : start + steps]


def forecast(
    series: np.ndarray, n_train: int, regime: Bptt, cfg: StockConfig, device: torch.device
) -> np.ndarray:
    """Train a fresh model of ``regime`` on ``series[:n_train]``; return its forecasts of ``series[n_train:]``.

    Inputs may reach back into the train part (those prices are known when forecasting); targets, the scaler and
    all gradient steps use train days only. With ``model.target=delta`` the model predicts the change
    ``s[t] - s[t-h]`` and the forecast is ``s[t-h] + change``: zero change is exactly the naive forecast.
    """
    if regime == Bptt.window:
        return window_forecast(series, n_train, cfg, device)
    chunk = None if regime == Bptt.full else cfg.train.tbptt_steps
    return sequence_forecast(series, n_train, chunk, cfg, device)


@dataclass
class ScaledSeries:
    """The series scaled with its train part's range, and what both regimes need around it."""

    scaler: MinMaxScaler
    scaled: np.ndarray  # float64 [days]
    test_t: np.ndarray  # the test days' indices
    horizon: int
    delta: bool  # model.target=delta: the model predicts the change since day t - horizon

    def baseline(self, t: np.ndarray) -> np.ndarray | float:
        """What a prediction for days ``t`` is relative to: ``scaled[t - h]`` for delta targets, else 0."""
        return self.scaled[t - self.horizon] if self.delta else 0.0

    def unscale(self, out: np.ndarray) -> np.ndarray:
        """The model's outputs at the test days -> forecasts in dollars."""
        return self.scaler.inverse(out + self.baseline(self.test_t))


def _scale(series: np.ndarray, n_train: int, cfg: StockConfig) -> ScaledSeries:
    h, w = cfg.data.horizon, cfg.data.window
    if n_train < w + h + 1 or n_train >= len(series):
        raise NmtError(f"{len(series)} days, {n_train} for training: too few for window={w}, horizon={h}")
    scaler = MinMaxScaler.fit(series[:n_train])
    return ScaledSeries(
        scaler, scaler.transform(series), np.arange(n_train, len(series)), h, cfg.model.target == Target.delta
    )


def _fresh_forecaster(cfg: StockConfig) -> Forecaster:
    torch.manual_seed(cfg.seed)
    return Forecaster(cfg.model)


def window_forecast(series: np.ndarray, n_train: int, cfg: StockConfig, device: torch.device) -> np.ndarray:
    """``train.bptt=window``: independent windows of ``data.window`` past prices, the state reset per window."""
    data = _scale(series, n_train, cfg)
    model = LastStep(_fresh_forecaster(cfg))
    h, w = cfg.data.horizon, cfg.data.window
    train_t = np.arange(w + h - 1, n_train)
    x_train = torch.from_numpy(window_samples(data.scaled, train_t, w, h))
    y_train = torch.from_numpy((data.scaled[train_t] - data.baseline(train_t)).astype(np.float32))
    fit(
        model,
        lambda epoch: tensor_batches(x_train, y_train, cfg.train.batch_size, True, cfg.seed, epoch),
        nn.functional.mse_loss,
        cfg.train,
        device,
    )
    model.eval()
    with torch.no_grad():
        x_test = torch.from_numpy(window_samples(data.scaled, data.test_t, w, h)).to(device)
        return data.unscale(model(x_test).cpu().numpy())


def sequence_forecast(
    series: np.ndarray, n_train: int, chunk: int | None, cfg: StockConfig, device: torch.device
) -> np.ndarray:
    """``train.bptt=full`` (``chunk=None``: the whole train period is one chunk) or ``truncated`` (chunks of
    ``chunk`` steps): the train period as ONE sequence, the state carried from chunk to chunk."""
    data = _scale(series, n_train, cfg)
    carried = CarriedState(_fresh_forecaster(cfg))
    h = cfg.data.horizon
    train_t = np.arange(h, n_train)
    inputs = torch.from_numpy(data.scaled[train_t - h].astype(np.float32)).view(1, -1, 1)
    targets = torch.from_numpy((data.scaled[train_t] - data.baseline(train_t)).astype(np.float32)).view(1, -1)
    steps = inputs.shape[1] if chunk is None else chunk
    fit(
        carried,
        lambda epoch: sequence_chunks(carried, inputs, targets, steps),
        nn.functional.mse_loss,
        cfg.train,
        device,
        lr=cfg.train.sequence_lr,
        epochs=cfg.train.sequence_epochs,
    )
    # Run the whole history once (train days warm the state up), read the outputs at test days' inputs.
    carried.eval()
    carried.reset()
    with torch.no_grad():
        history = (
            torch.from_numpy(data.scaled[: len(series) - h].astype(np.float32)).view(1, -1, 1).to(device)
        )
        return data.unscale(carried(history)[0].cpu().numpy()[data.test_t - h])


def run_stock(cfg: StockConfig) -> dict:
    """Forecast the test days with each regime in ``train.bptt``, score them in dollars, write the run's outputs."""
    device, run_dir = setup(cfg)
    prices = load_prices(cfg)
    series = prices.price
    n_train = chronological_split(len(series), cfg.data.test_fraction)
    test_t = np.arange(n_train, len(series))
    truth = series[test_t]
    naive = naive_forecast(series, test_t, cfg.data.horizon)
    predictions, scores = {}, {"naive": rmse(naive, truth)}
    for regime in cfg.train.bptt:
        name = f"{cfg.model.cell}-{regime}"
        log.info("training %s", name)
        predictions[name] = forecast(series, n_train, Bptt(regime), cfg, device)
        scores[name] = rmse(predictions[name], truth)
    plot_forecast(
        prices.dates[n_train:],
        truth,
        {**predictions, "naive (tomorrow = today)": naive},
        run_dir / "forecast.png",
        title="mean daily price, test days; RMSE: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()),
    )
    metrics = {
        "data": prices.report,
        "days": {"train": n_train, "test": len(test_t)},
        "window": cfg.data.window,
        "horizon": cfg.data.horizon,
        "target": str(cfg.model.target),
        "test_rmse": scores,
        "tbptt_steps": cfg.train.tbptt_steps,
        "book_rmse": BOOK_RMSE,
    }
    write_metrics(run_dir, metrics)
    print(
        f"{len(series)} days ({prices.report['first']} .. {prices.report['last']}): train {n_train}, test {len(test_t)}"
    )
    for name, value in scores.items():
        verdict = (
            ""
            if name == "naive"
            else ("  (beats naive)" if value < scores["naive"] else "  (naive is better)")
        )
        print(f"test RMSE {name:<16} {value:7.3f}{verdict}")
    return metrics
