"""The recipes' shared pieces: configs, split, batches, training loop, metrics, hub fail-fast."""

import time

import datasets
import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch import nn

from nmt.errors import NmtError
from nmt.recipes.common import (
    SequenceClassifier,
    accuracy_of,
    fit,
    index_batches,
    make_rnn,
    predict,
    stratified_split,
    tensor_batches,
)
from nmt.recipes.config import (
    Bptt,
    Cell,
    ImageRowsConfig,
    RecipeTrainConfig,
    SentimentConfig,
    StockConfig,
    recipe_config,
)
from nmt.recipes.hub import load_hub_dataset
from nmt.recipes.metrics import classification_report, confusion_matrix, format_table, naive_forecast, rmse

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    "name, schema", [("sentiment", SentimentConfig), ("image_rows", ImageRowsConfig), ("stock", StockConfig)]
)
def test_configs_compose_with_defaults_and_smoke(name, schema):
    default = recipe_config(name)
    smoke = recipe_config(name, ["train=smoke", "run_dir=/tmp/x"])
    assert isinstance(default, schema) and isinstance(smoke, schema)
    assert default == schema()  # YAML restates no default
    assert default.run_dir == f"runs/recipe-{name}"
    assert smoke.run_dir == "/tmp/x"
    assert smoke != default


def test_config_typos_and_bad_enums_fail_when_composed():
    with pytest.raises(ConfigCompositionException, match="epochz"):
        recipe_config("sentiment", ["train.epochz=3"])
    with pytest.raises(ConfigCompositionException):
        recipe_config("image_rows", ["model.cell=grux"])
    with pytest.raises(NmtError, match="unknown recipe"):
        recipe_config("weather")


def test_config_list_of_enums_override():
    cfg = recipe_config("stock", ["train.bptt=[truncated]", "train.tbptt_steps=7"])
    assert cfg.train.bptt == [Bptt.truncated] and cfg.train.tbptt_steps == 7


# -------------------------------------------------------------------------------------------- split, batches
def test_stratified_split_keeps_class_mix_and_covers_every_row_once():
    labels = np.array([0] * 60 + [1] * 40)
    dev, test, train = stratified_split(labels, [0.1, 0.2], seed=3)
    assert sorted(np.concatenate([dev, test, train]).tolist()) == list(range(100))
    assert np.bincount(labels[dev]).tolist() == [6, 4]
    assert np.bincount(labels[test]).tolist() == [12, 8]
    assert np.bincount(labels[train]).tolist() == [42, 28]
    again = stratified_split(labels, [0.1, 0.2], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, [dev, test, train], strict=True))
    other = stratified_split(labels, [0.1, 0.2], seed=4)
    assert not np.array_equal(other[0], dev)
    with pytest.raises(NmtError):
        stratified_split(labels, [0.7, 0.5], seed=0)


def test_index_batches_reproducible_per_epoch_and_complete():
    a = list(index_batches(10, 4, shuffle=True, seed=1, epoch=2))
    b = list(index_batches(10, 4, shuffle=True, seed=1, epoch=2))
    c = list(index_batches(10, 4, shuffle=True, seed=1, epoch=3))
    assert [len(x) for x in a] == [4, 4, 2]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(10))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert np.concatenate(list(index_batches(5, 2, shuffle=False))).tolist() == [0, 1, 2, 3, 4]


def test_tensor_batches_pair_rows():
    x, y = torch.arange(12.0).view(6, 2), torch.arange(6)
    for (xb,), yb in tensor_batches(x, y, 4, shuffle=True, seed=0, epoch=1):
        assert torch.equal(xb[:, 0], 2.0 * yb)


@pytest.mark.parametrize("cell, expected", [(Cell.rnn, nn.RNN), (Cell.gru, nn.GRU), (Cell.lstm, nn.LSTM)])
def test_make_rnn_types_and_shapes(cell, expected):
    rnn = make_rnn(cell, 3, 5, layers=2, dropout=0.1, bidirectional=True)
    assert type(rnn) is expected and rnn.batch_first and rnn.dropout == 0.1
    out, _ = rnn(torch.zeros(2, 7, 3))
    assert out.shape == (2, 7, 10)
    assert make_rnn(cell, 3, 5, layers=1, dropout=0.5).dropout == 0.0  # no dropout after a single layer


# ----------------------------------------------------------------------------------------------- loop
def test_fit_learns_a_separable_task_and_restores_the_best_epoch():
    torch.manual_seed(0)
    x = torch.randn(200, 4, 2)
    y = (x[:, -1, 0] > 0).long()  # the class is the sign of the last step's first feature
    model = SequenceClassifier(2, 2, Cell.gru, 8)
    scores = []

    def validate(m):
        scores.append(accuracy_of(m, lambda: tensor_batches(x, y, 64), CPU))
        return scores[-1]

    cfg = RecipeTrainConfig(epochs=15, batch_size=32, lr=0.02)
    result = fit(
        model, lambda e: tensor_batches(x, y, 32, True, 0, e), nn.functional.cross_entropy, cfg, CPU, validate
    )
    assert len(result.history) == 15 and result.best_score == max(scores) >= 0.95
    assert result.best_epoch == scores.index(max(scores)) + 1
    assert accuracy_of(model, lambda: tensor_batches(x, y, 64), CPU) == pytest.approx(max(scores))
    logits, targets = predict(model, tensor_batches(x, y, 64), CPU)
    assert logits.shape == (200, 2) and torch.equal(targets, y)


def test_fit_stops_on_non_finite_loss():
    x, y = torch.tensor([[1.0]]), torch.tensor([[float("nan")]])
    with pytest.raises(NmtError, match="non-finite"):
        fit(
            nn.Linear(1, 1),
            lambda e: iter([((x,), y)]),
            nn.functional.mse_loss,
            RecipeTrainConfig(epochs=1),
            CPU,
        )


def test_fit_clips_the_gradient_norm(monkeypatch):
    norms = []  # (norm before clipping, norm after)
    real_clip = nn.utils.clip_grad_norm_

    def spy(params, max_norm):
        params = list(params)
        before = real_clip(params, max_norm)
        norms.append((float(before), float(torch.cat([p.grad.flatten() for p in params]).norm())))
        return before

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    x, y = torch.tensor([[1000.0]]), torch.tensor([[0.0]])
    fit(
        nn.Linear(1, 1), lambda e: iter([((x,), y)]), nn.functional.mse_loss, RecipeTrainConfig(epochs=1), CPU
    )
    assert norms[0][0] > 1.0 and norms[0][1] == pytest.approx(1.0, rel=1e-4)


# -------------------------------------------------------------------------------------------- metrics
def test_confusion_matrix_and_per_class_by_hand():
    true = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 2, 2])
    cm = confusion_matrix(true, pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    report = classification_report(true, pred, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = report["per_class"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert a["f1"] == pytest.approx(0.8)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    table = format_table(report["per_class"]).splitlines()
    assert table[0].split() == ["class", "support", "precision", "recall", "f1"]
    assert table[1].split() == ["a", "3", "100.0", "66.7", "80.0"]


def test_rmse_and_naive_forecast_by_hand():
    series = np.array([10.0, 12.0, 11.0, 15.0, 14.0])
    targets = np.array([2, 3, 4])
    naive = naive_forecast(series, targets, horizon=1)
    assert naive.tolist() == [12.0, 11.0, 15.0]
    # errors 12-11=1, 11-15=-4, 15-14=1 → sqrt((1 + 16 + 1) / 3) = sqrt(6)
    assert rmse(naive, series[targets]) == pytest.approx(np.sqrt(6))
    assert naive_forecast(series, targets, horizon=2).tolist() == [10.0, 12.0, 11.0]
    assert rmse(np.array([3.0]), np.array([3.0])) == 0.0
    with pytest.raises(ValueError):
        naive_forecast(series, np.array([0, 1]), horizon=1)
    with pytest.raises(ValueError):
        rmse(np.zeros(2), np.zeros(3))


# ------------------------------------------------------------------------------------------------ hub
def test_hub_dataset_offline_fails_fast_naming_the_offline_default(unreachable_hub):
    start = time.perf_counter()
    with pytest.raises(NmtError, match=r"offline default \(data.source=rotten_tomatoes\)"):
        load_hub_dataset("imdb", offline_default="data.source=rotten_tomatoes")
    assert time.perf_counter() - start < 10


def test_hub_dataset_load_errors_become_an_nmt_error_naming_the_offline_default(monkeypatch):
    def unreachable(name):
        raise ConnectionError(f"Couldn't reach {name!r} on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no probe: straight to datasets, which fails
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(NmtError, match="OfflineModeIsEnabled.*offline: use data.source=fashion_mnist"):
        load_hub_dataset("cifar10", offline_default="data.source=fashion_mnist")


def test_hub_dataset_from_a_save_to_disk_directory(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"], "label": [1]})}).save_to_disk(
        tmp_path / "d"
    )
    loaded = load_hub_dataset(str(tmp_path / "d"), offline_default="x")
    assert loaded["train"]["text"] == ["a"]
    with pytest.raises(NmtError, match="save_to_disk"):
        load_hub_dataset(str(tmp_path), offline_default="x")
