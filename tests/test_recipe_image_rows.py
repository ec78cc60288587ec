"""Recipe 2: IDX loading, rows as time steps, the row permutation, and a tiny model on a row-position task."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.errors import NmtError
from nmt.recipes.config import ImageRowsConfig, ImageSource
from nmt.recipes.image_rows import (
    FASHION_FILES,
    as_rows,
    load_fashion_mnist,
    load_images,
    read_idx,
    row_permutation,
    run_image_rows,
)

REAL_DIR = Path(ImageRowsConfig().data.fashion_dir)


def write_idx(path, array):
    """An IDX ubyte.gz file: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def bright_row_images(n, classes=4, size=8, seed=0):
    """Class c has its bright row at 2c: only the row's POSITION tells the classes apart."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
    images[np.arange(n), 2 * labels] = 250
    return images, labels


def write_fashion_dir(directory, n_train=400, n_test=80):
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = bright_row_images(n, seed=seed)
        write_idx(directory / FASHION_FILES[split][0], images)
        write_idx(directory / FASHION_FILES[split][1], labels)
    return directory


def test_read_idx_round_trip_and_errors(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "i.gz", images)), images)
    assert read_idx(write_idx(tmp_path / "l.gz", [7, 1, 9])).tolist() == [7, 1, 9]
    truncated = tmp_path / "t.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"abc")
    with pytest.raises(NmtError, match="t.gz: header says"):
        read_idx(truncated)
    floats = tmp_path / "f.gz"
    with gzip.open(floats, "wb") as f:
        f.write(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"abcd")
    with pytest.raises(NmtError, match="not an IDX file of unsigned bytes"):
        read_idx(floats)
    (tmp_path / "plain.gz").write_bytes(b"not gzip")
    with pytest.raises(NmtError, match="plain.gz: cannot read"):
        read_idx(tmp_path / "plain.gz")


def test_load_fashion_dir_shapes_and_missing_package_message(tmp_path):
    data = load_fashion_mnist(write_fashion_dir(tmp_path / "fm"))
    assert data.images["train"].shape == (400, 8, 8) and data.images["test"].shape == (80, 8, 8)
    assert data.labels["train"].dtype == np.int64 and data.classes[9] == "Ankle boot"
    with pytest.raises(NmtError, match=r"dataset-fashion-mnist.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_cifar10_offline_fails_fast_naming_fashion_mnist(unreachable_hub):
    cfg = ImageRowsConfig()
    cfg.data.source = ImageSource.cifar10
    with pytest.raises(NmtError, match="data.source=fashion_mnist"):
        load_images(cfg)


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_has_60k_and_10k_images():
    data = load_fashion_mnist(REAL_DIR)
    assert data.images["train"].shape == (60_000, 28, 28) and data.images["test"].shape == (10_000, 28, 28)
    assert np.bincount(data.labels["train"]).tolist() == [6_000] * 10
    assert np.bincount(data.labels["test"]).tolist() == [1_000] * 10
    assert as_rows(data.images["test"][:5]).shape == (5, 28, 28)


def test_as_rows_grey_and_book_colour_layout():
    grey = np.full((2, 28, 28), 255, dtype=np.uint8)
    rows = as_rows(grey)
    assert rows.shape == (2, 28, 28) and rows.dtype == torch.float32 and float(rows.max()) == 1.0
    colour = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    colour[0, 0, 1, 2] = 255  # row 1, column 2, blue
    rows = as_rows(colour)
    assert rows.shape == (1, 32, 96)  # the book: 32 steps of 32 * 3 values
    assert torch.nonzero(rows[0]).tolist() == [
        [0, 1 * 3 + 2]
    ]  # [r1c1_red, r1c1_green, r1c1_blue, r1c2_red, ...]


def test_row_permutation_is_fixed_and_never_identity():
    perm = row_permutation(28, seed=0)
    assert sorted(perm.tolist()) == list(range(28))
    assert np.array_equal(perm, row_permutation(28, seed=0))
    assert not np.array_equal(perm, np.arange(28))
    assert all(not np.array_equal(row_permutation(2, s), [0, 1]) for s in range(5))


def test_tiny_run_learns_which_row_is_bright(tmp_path, capsys):
    cfg = ImageRowsConfig(run_dir=str(tmp_path / "run"), device="cpu")
    cfg.data.fashion_dir = str(write_fashion_dir(tmp_path / "fm"))
    cfg.data.dev_size = 40
    cfg.model.hidden_size = 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = 25, 32, 0.01
    cfg.samples = 6
    metrics = run_image_rows(cfg)
    assert metrics["sizes"] == {"train": 360, "dev": 40, "test": 80}
    assert (metrics["steps"], metrics["features"]) == (8, 8)
    assert metrics["test_accuracy"] >= 0.95
    order = metrics["row_order"]
    # The class IS the row position: shuffled rows at test time fool the ordered model; a model trained on the
    # same fixed permutation learns it just as well.
    assert order["ordered_model_on_shuffled_rows"] < 0.6
    assert order["permuted_model_on_shuffled_rows"] >= 0.95
    assert [row["support"] for row in metrics["per_class"][:4]] == [20, 20, 20, 20]
    for name in ("metrics.json", "samples.png", "confusion.png", "model.pt", "config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    out = capsys.readouterr().out
    assert "T-shirt/top" in out and "rows shuffled at test time" in out
