from pathlib import Path

import datasets
import numpy as np
import pytest
from corpus import digit_config

from nmt.data.prepare import prepare_data
from nmt.data.sample import sample_indices, write_sample
from nmt.tokenizer import Tokenizer


def drawn(population: int, size: int, seed: int, window: int) -> np.ndarray:
    return np.concatenate(list(sample_indices(population, size, seed, window)))


@pytest.mark.parametrize(("population", "size", "window"), [(1000, 137, 64), (1000, 1000, 64), (50, 80, 7)])
def test_sample_indices_are_exactly_size_distinct_ascending_indices(population, size, window):
    picked = drawn(population, size, seed=3, window=window)
    assert len(picked) == min(size, population) == len(np.unique(picked))
    assert np.all(np.diff(picked) > 0) and picked.min() >= 0 and picked.max() < population
    windows = list(sample_indices(population, size, 3, window))
    assert len(windows) == -(-population // window)
    assert all(((w // window) == i).all() for i, w in enumerate(windows))  # each window's own indices


def test_sample_indices_are_seeded_and_uniform():
    assert np.array_equal(drawn(500, 40, 1, 32), drawn(500, 40, 1, 32))
    assert not np.array_equal(drawn(500, 40, 1, 32), drawn(500, 40, 2, 32))
    # Every index is equally likely, wherever its window: 10 of 50 over 2000 seeds, 400 picks each expected
    # (binomial sd 18); a draw biased towards early or late windows would leave some far outside.
    counts = np.bincount(np.concatenate([drawn(50, 10, seed, 7) for seed in range(2000)]), minlength=50)
    assert counts.sum() == 20_000 and counts.min() > 330 and counts.max() < 470


@pytest.fixture
def train() -> datasets.Dataset:
    n = 300
    return datasets.Dataset.from_dict(
        {"src": [f"s{i}" for i in range(n)], "tgt": [f"t{i}" for i in range(n)]}
    )


def lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_joint_sample_is_size_sentences_from_both_sides_and_seeded(train, tmp_path):
    src, tgt = write_sample(train, 101, joint=True, seed=5, out_dir=tmp_path / "a")
    assert len(lines(src)) + len(lines(tgt)) == 101
    assert set(lines(src)) <= set(train["src"]) and set(lines(tgt)) <= set(train["tgt"])
    assert len(lines(src)) > 20 and len(lines(tgt)) > 20  # about half each
    again = write_sample(train, 101, joint=True, seed=5, out_dir=tmp_path / "b")
    assert [p.read_bytes() for p in again] == [src.read_bytes(), tgt.read_bytes()]
    other = write_sample(train, 101, joint=True, seed=6, out_dir=tmp_path / "c")
    assert [p.read_bytes() for p in other] != [src.read_bytes(), tgt.read_bytes()]


def test_separate_sample_is_the_same_size_rows_on_each_side(train, tmp_path):
    src, tgt = write_sample(train, 40, joint=False, seed=0, out_dir=tmp_path)
    assert len(lines(src)) == len(lines(tgt)) == 40
    assert [s[1:] for s in lines(src)] == [t[1:] for t in lines(tgt)]  # line i of both: the same row


def test_size_zero_or_beyond_the_split_takes_every_sentence(train, tmp_path):
    for size in (0, 10_000):
        src, tgt = write_sample(train, size, joint=True, seed=0, out_dir=tmp_path / str(size))
        assert lines(src) == list(train["src"]) and lines(tgt) == list(train["tgt"])


def test_prepare_trains_the_tokenizer_on_exactly_the_seeded_sample(tmp_path, monkeypatch):
    seen = []
    train_files = Tokenizer.train_files.__func__

    def watched(cls, src_file: Path, tgt_file: Path, cfg, out_dir):
        seen.append((lines(src_file), lines(tgt_file)))
        return train_files(cls, src_file, tgt_file, cfg, out_dir)

    monkeypatch.setattr(Tokenizer, "train_files", classmethod(watched))
    for run in ("a", "b"):  # the same corpus twice, in two places: two trainings
        cfg = digit_config(tmp_path / run)
        cfg.tokenizer.input_sentence_size = 200
        data = prepare_data(cfg, Path(cfg.run_dir))
    (src, tgt), again = seen
    assert len(src) + len(tgt) == 200 and again == (src, tgt)
    assert set(src) <= set(data.splits["train"]["src"]) and set(tgt) <= set(data.splits["train"]["tgt"])
