"""Recipe 3: price loading, chronological split, leak-free scaling, windows, forecasts and truncated BPTT."""

import io
import tarfile

import numpy as np
import pytest
import torch
from corpus import real_package_file

from nmt.errors import NmtError
from nmt.recipes.config import Bptt, PriceSource, StockConfig, StockModelConfig, Target
from nmt.recipes.metrics import naive_forecast, rmse
from nmt.recipes.stock import (
    CarriedState,
    Forecaster,
    LastStep,
    MinMaxScaler,
    chronological_split,
    forecast,
    gradient_reach,
    load_prices,
    parse_prices,
    pmdarima_msft_path,
    read_tar_csv,
    run_stock,
    sequence_chunks,
    sequence_forecast,
    window_forecast,
    window_samples,
)

CPU = torch.device("cpu")
HEADER = "Date,Open,High,Low,Close,Volume,OpenInt\n"


def msft_like_csv(days=30, start_price=20.0):
    lines = [HEADER]
    for i in range(days):
        p = start_price + i
        lines.append(f"2012-01-{i + 1:02d},{p},{p + 2},{p - 2},{p + 4},1000,0\n")
    return "".join(lines)


def write_tar(path, name, text):
    data = text.encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_parse_prices_mean_of_four_dates_and_counted_drops():
    text = (
        HEADER
        + "2011-12-30,1,1,1,1,0,0\n"  # before start
        + "2012-01-04,10,12,8,14,0,0\n"
        + "2012-01-03,1,2,3,4,0,0\n"  # out of order: sorted
        + "2012-01-05,null,null,null,null,null,0\n"
        + "not-a-date,1,1,1,1,0,0\n"
        + "2012-01-04,99,99,99,99,0,0\n"  # repeated date: the first one stays
        + "2013-01-02,5,5,5,5,0,0\n"  # after end
    )
    prices = parse_prices(text, "t.csv", "2012-01-01", "2012-12-31")
    assert prices.dates == ["2012-01-03", "2012-01-04"]
    assert prices.price.tolist() == [2.5, 11.0]
    assert prices.report["rows"] == 7 and prices.report["kept"] == 2
    assert prices.report["dropped"] == {"outside dates": 2, "bad price": 1, "bad date": 1, "repeated date": 1}


def test_parse_prices_errors_name_the_file():
    with pytest.raises(NmtError, match=r"t.csv: missing column\(s\) \['Low'\]"):
        parse_prices("Date,Open,High,Close\n2012-01-03,1,1,1\n", "t.csv", "2012-01-01", "2012-12-31")
    with pytest.raises(NmtError, match="t.csv: no usable rows"):
        parse_prices(msft_like_csv(3), "t.csv", "2020-01-01", "2020-12-31")
    with pytest.raises(NmtError, match="YYYY-MM-DD"):
        parse_prices(msft_like_csv(3), "t.csv", "2012/01/01", "2012-12-31")


def test_load_prices_from_tar_and_csv(tmp_path):
    cfg = StockConfig()
    cfg.data.path = str(write_tar(tmp_path / "m.tar.gz", "msft.csv", msft_like_csv(30)))
    prices = load_prices(cfg)
    assert len(prices.price) == 30 and prices.price[0] == pytest.approx(21.0)  # (20 + 22 + 18 + 24) / 4
    (tmp_path / "p.csv").write_text(msft_like_csv(10))
    cfg = StockConfig()
    cfg.data.source, cfg.data.path, cfg.data.end = PriceSource.csv, str(tmp_path / "p.csv"), "2012-01-05"
    assert load_prices(cfg).dates[-1] == "2012-01-05"
    cfg.data.path = None
    with pytest.raises(NmtError, match="data.source=csv needs data.path"):
        load_prices(cfg)
    with pytest.raises(NmtError, match="no msft.csv"):
        read_tar_csv(write_tar(tmp_path / "two.tar.gz", "a.txt", "x"))
    with pytest.raises(NmtError, match="price archive not found"):
        read_tar_csv(tmp_path / "none.tar.gz")


def test_real_msft_2012_2017_has_1476_days():
    real_package_file(pmdarima_msft_path)  # skips when pmdarima (and so the default data) is absent
    prices = load_prices(StockConfig())
    assert len(prices.price) == 1_476
    assert (prices.dates[0], prices.dates[-1]) == ("2012-01-03", "2017-11-10")
    assert chronological_split(1_476, 0.3) == 1_033  # test: ceil(0.3 * 1476) = 443 days


def test_chronological_split_and_scaler_fit_on_train_only():
    assert chronological_split(10, 0.3) == 7 and chronological_split(11, 0.3) == 7
    with pytest.raises(NmtError):
        chronological_split(10, 1.0)
    series = np.array([2.0, 4.0, 6.0, 10.0, 20.0])
    scaler = MinMaxScaler.fit(series[:3])
    assert (scaler.lo, scaler.hi) == (2.0, 6.0)
    assert scaler.transform(series).tolist() == [0.0, 0.5, 1.0, 2.0, 4.5]  # test values beyond 1: no leak
    assert scaler.inverse(scaler.transform(series)).tolist() == series.tolist()
    assert MinMaxScaler.fit(np.array([3.0, 3.0])).transform(np.array([3.0])).tolist() == [0.0]


def test_window_samples_take_the_days_before_target_minus_horizon():
    scaled = np.arange(10.0)
    x = window_samples(scaled, np.array([5, 9]), window=3, horizon=2)
    assert x.shape == (2, 3, 1)
    assert x[..., 0].tolist() == [[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]]  # target 5 from days 1..3 (2 days ahead)


def test_models_shapes():
    model = Forecaster(StockModelConfig(hidden_size=4))
    out, (h, c) = model(torch.zeros(3, 7, 1))
    assert out.shape == (3, 7) and h.shape == (1, 3, 4)
    assert LastStep(model)(torch.zeros(3, 7, 1)).shape == (3,)


def test_truncated_bptt_carries_the_state_but_no_gradient_across_chunks():
    torch.manual_seed(0)
    carried = CarriedState(Forecaster(StockModelConfig(hidden_size=4)))
    x = torch.randn(1, 10, 1, requires_grad=True)
    first = carried(x[:, :5])
    h, c = carried.state
    assert h.grad_fn is None and c.grad_fn is None and not h.requires_grad
    second = carried(x[:, 5:])
    second.sum().backward()
    assert torch.count_nonzero(x.grad[0, :5]) == 0  # nothing flows back into the first chunk
    assert torch.count_nonzero(x.grad[0, 5:]) == 5
    # ... while the forward pass is exactly that of the whole sequence (the state was carried over).
    whole, _ = carried.model(x)
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-6)
    from_zero, _ = carried.model(x[:, 5:])
    assert not torch.allclose(from_zero, second)

    x.grad = None
    whole[:, 5:].sum().backward()  # full BPTT: the same loss reaches the first chunk's inputs
    assert torch.count_nonzero(x.grad[0, :5]) == 5


def test_gradient_reach_stops_at_the_last_chunk_only_when_truncated():
    truncated = gradient_reach(truncated=True, length=40, steps=10)
    full = gradient_reach(truncated=False, length=40, steps=10)
    assert truncated.shape == full.shape == (40,)
    assert np.count_nonzero(truncated[:30]) == 0 and np.count_nonzero(truncated[30:]) == 10
    assert np.count_nonzero(full[:30]) == 30
    assert np.allclose(truncated[30:], full[30:], atol=1e-6)  # same forward pass, same last-chunk gradient


def test_sequence_chunks_reset_and_cover_the_sequence():
    carried = CarriedState(Forecaster(StockModelConfig(hidden_size=2)))
    carried.state = "stale"
    x, y = torch.zeros(1, 23, 1), torch.arange(23.0).view(1, -1)
    chunks = list(sequence_chunks(carried, x, y, steps=10))
    assert carried.state is None
    assert [c[1].shape[1] for c in chunks] == [10, 10, 3]
    assert torch.cat([c[1] for c in chunks], dim=1).tolist() == y.tolist()


def sine_config(**train):
    cfg = StockConfig(device="cpu")
    cfg.data.window = 5
    cfg.model.hidden_size = 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = 15, 16, 0.01
    cfg.train.sequence_epochs, cfg.train.tbptt_steps, cfg.train.sequence_lr = 60, 20, 0.01
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.mark.parametrize("regime, target", [(Bptt.window, Target.delta), (Bptt.truncated, Target.level)])
def test_lstm_forecasts_a_sine_wave_far_better_than_naive(regime, target):
    torch.manual_seed(0)
    t = np.arange(400)
    series = 10 + 5 * np.sin(2 * np.pi * t / 25)
    cfg = sine_config()
    cfg.model.target = target
    pred = forecast(series, 280, regime, cfg, CPU)
    naive = rmse(naive_forecast(series, np.arange(280, 400), 1), series[280:])
    assert naive == pytest.approx(0.876, abs=0.01)
    assert pred.shape == (120,)
    assert rmse(pred, series[280:]) < 0.3


@pytest.mark.parametrize("regime", [Bptt.window, Bptt.truncated])
def test_forecasts_use_only_the_past(regime):
    """Leak-free: changing a test-day price changes no forecast made before that day (scaler and training
    included), and changing the last day changes nothing at all."""
    series = 10 + np.sin(np.arange(60) / 3)
    cfg = sine_config(epochs=2, sequence_epochs=2)
    base = forecast(series, 40, regime, cfg, CPU)
    changed = series.copy()
    changed[45] += 100.0
    later = forecast(changed, 40, regime, cfg, CPU)
    assert np.array_equal(base[:6], later[:6])  # forecasts of days 40..45
    assert not np.allclose(base[6:], later[6:])  # day 45 is an input from day 46 on
    changed = series.copy()
    changed[-1] *= 10
    assert np.array_equal(base, forecast(changed, 40, regime, cfg, CPU))


def test_forecast_runs_the_regimes_function():
    """window -> window_forecast; full -> one chunk as long as the train period; truncated -> tbptt_steps."""
    series = 10 + np.sin(np.arange(60) / 3)
    cfg = sine_config(epochs=1, sequence_epochs=2, tbptt_steps=7)
    assert np.array_equal(forecast(series, 40, Bptt.window, cfg, CPU), window_forecast(series, 40, cfg, CPU))
    full = forecast(series, 40, Bptt.full, cfg, CPU)
    assert np.array_equal(full, sequence_forecast(series, 40, None, cfg, CPU))
    assert np.array_equal(full, sequence_forecast(series, 40, 39, cfg, CPU))  # 39 train inputs: one chunk
    truncated = forecast(series, 40, Bptt.truncated, cfg, CPU)
    assert np.array_equal(truncated, sequence_forecast(series, 40, 7, cfg, CPU))
    assert not np.allclose(truncated, full)


def test_tiny_stock_run_writes_rmse_next_to_naive(tmp_path, capsys):
    cfg = sine_config(epochs=2, sequence_epochs=3)
    cfg.run_dir = str(tmp_path / "run")
    cfg.data.path = str(write_tar(tmp_path / "m.tar.gz", "msft.csv", msft_like_csv(31)))
    metrics = run_stock(cfg)
    assert metrics["days"] == {"train": 21, "test": 10}
    assert set(metrics["test_rmse"]) == {"naive", "lstm-window", "lstm-full", "lstm-truncated"}
    assert metrics["test_rmse"]["naive"] == pytest.approx(1.0)  # the price rises by exactly 1 a day
    assert (tmp_path / "run" / "forecast.png").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert "test RMSE naive" in capsys.readouterr().out
