"""Arrow cache helpers: datasets' progress bar, shown for large maps only; rows kept by a mask."""

import datasets
import numpy as np
import pytest

import nmt.data.features  # noqa: F401  (turns datasets' progress bars off, as every nmt run does)
from nmt.data import cache


def _map_output(n_rows: int, wanted: bool, capsys) -> str:
    ds = datasets.Dataset.from_dict({"x": list(range(n_rows))})
    with cache.map_progress(n_rows, wanted):
        ds.map(lambda batch: {"y": batch["x"]}, batched=True, desc="doubling")
    return capsys.readouterr().err


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(cache, "PROGRESS_ROWS", 20)


def test_a_map_over_many_rows_shows_its_bar_then_bars_are_off_again(small_threshold, capsys):
    assert datasets.are_progress_bars_disabled()
    assert "doubling: 100%" in _map_output(20, True, capsys)
    assert datasets.are_progress_bars_disabled()


@pytest.mark.parametrize(("n_rows", "wanted"), [(19, True), (20, False)])
def test_a_small_or_unwanted_map_stays_quiet(small_threshold, capsys, n_rows, wanted):
    assert "doubling" not in _map_output(n_rows, wanted, capsys)


def test_keep_rows_keeps_the_masked_rows_in_order_through_a_mapping_on_disk(tmp_path):
    ds = datasets.Dataset.from_dict({"x": list(range(10)), "s": [f"r{i}" for i in range(10)]})
    keep = np.array([i % 3 != 1 for i in range(10)])
    kept = cache.keep_rows(ds, keep, tmp_path / "kept.arrow")
    assert kept["x"][:] == [0, 2, 3, 5, 6, 8, 9] and kept["s"][:] == [f"r{i}" for i in (0, 2, 3, 5, 6, 8, 9)]
    assert (tmp_path / "kept.arrow").is_file()
    assert cache.keep_rows(ds, np.ones(10, bool), tmp_path / "all.arrow") is ds  # nothing to drop, no file
    assert len(cache.keep_rows(ds, np.zeros(10, bool), tmp_path / "none.arrow")) == 0
