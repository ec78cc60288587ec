"""Recipe 2: image classification with an RNN that reads one pixel row per time step (the book's Listing 7-1/7-2).

Fashion-MNIST ``[N, 28, 28]`` gives 28 steps of 28 features; CIFAR-10 ``[N, 32, 32, 3]`` is reshaped as in the book
to ``[N, 32, 32*3]``. A 64-unit tanh RNN's last output goes through one linear layer to 10 classes. The chapter's
point about order is measured by shuffling the rows with one fixed permutation.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from nmt.checkpoint import save_checkpoint
from nmt.errors import NmtError
from nmt.recipes.common import (
    SequenceClassifier,
    accuracy_of,
    fit,
    predict,
    setup,
    stratified_split,
    tensor_batches,
    write_metrics,
)
from nmt.recipes.config import Cell, ImageRowsConfig, ImageSource
from nmt.recipes.hub import load_hub_dataset
from nmt.recipes.metrics import classification_report, format_table
from nmt.recipes.plots import plot_confusion, plot_image_samples

log = logging.getLogger(__name__)

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_UBYTE = 0x08


@dataclass
class ImageData:
    images: dict[str, np.ndarray]  # split -> uint8 [N, H, W] or [N, H, W, 3]
    labels: dict[str, np.ndarray]  # split -> int64 [N]
    classes: list[str]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz``) of unsigned bytes as a uint8 array of the shape its header gives.

    Header: two zero bytes, type code 0x08 (ubyte), the number of dimensions d, then d big-endian uint32 sizes.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise NmtError(f"{path}: cannot read a gzip IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE:
        raise NmtError(f"{path}: not an IDX file of unsigned bytes (header {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise NmtError(
            f"{path}: header says {shape} = {expected} bytes of data, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(directory: str | Path) -> ImageData:
    """The four Fashion-MNIST IDX files: train 60,000 and test 10,000 images ``[N, 28, 28]`` with labels."""
    directory = Path(directory)
    missing = [name for pair in FASHION_FILES.values() for name in pair if not (directory / name).is_file()]
    if missing:
        raise NmtError(
            f"Fashion-MNIST not found: {directory} lacks {', '.join(missing)}. It comes from the Debian package "
            "dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`), or set data.fashion_dir to a "
            "folder holding these files"
        )
    images, labels = {}, {}
    for split, (image_file, label_file) in FASHION_FILES.items():
        images[split] = read_idx(directory / image_file)
        labels[split] = read_idx(directory / label_file).astype(np.int64)
        if images[split].ndim != 3 or labels[split].shape != images[split].shape[:1]:
            raise NmtError(
                f"{directory / image_file}: {images[split].shape} images do not match "
                f"{labels[split].shape} labels in {label_file}"
            )
    return ImageData(images, labels, list(FASHION_CLASSES))


def load_cifar10(hf_name: str) -> ImageData:
    """CIFAR-10 from the Hugging Face hub: train 50,000 and test 10,000 images ``[N, 32, 32, 3]``."""
    dataset = load_hub_dataset(hf_name, offline_default="data.source=fashion_mnist")
    images, labels = {}, {}
    for split in ("train", "test"):
        part = dataset[split]
        image_column = "img" if "img" in part.column_names else "image"
        images[split] = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in part[image_column]])
        labels[split] = np.asarray(part["label"], dtype=np.int64)
    return ImageData(images, labels, list(dataset["train"].features["label"].names))


def load_images(cfg: ImageRowsConfig) -> ImageData:
    if cfg.data.source == ImageSource.cifar10:
        return load_cifar10(cfg.data.hf_name)
    return load_fashion_mnist(cfg.data.fashion_dir)


def as_rows(images: np.ndarray) -> Tensor:
    """uint8 images ``[N, H, W]`` or ``[N, H, W, C]`` → float sequences ``[N, H, W*C]`` in [0, 1]: row = time step.

    For colour images each step holds ``[r1_c1_red, r1_c1_green, r1_c1_blue, r1_c2_red, ...]`` as in the book.
    """
    n, height = images.shape[:2]
    return torch.from_numpy(images.reshape(n, height, -1).astype(np.float32) / 255.0)


def row_permutation(n_rows: int, seed: int) -> np.ndarray:
    """A fixed random order of the rows (never the identity, so "shuffled" always means shuffled)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_rows)
    while n_rows > 1 and np.array_equal(perm, np.arange(n_rows)):
        perm = rng.permutation(n_rows)
    return perm


def train_classifier(
    cfg: ImageRowsConfig,
    x_train: Tensor,
    y_train: Tensor,
    x_dev: Tensor,
    y_dev: Tensor,
    n_classes: int,
    device: torch.device,
) -> tuple[SequenceClassifier, dict]:
    """A fresh seeded classifier trained on ``x_train [N, T, F]``; the best epoch is chosen on dev accuracy."""
    torch.manual_seed(cfg.seed)
    model = SequenceClassifier(
        x_train.shape[2], n_classes, Cell(cfg.model.cell), cfg.model.hidden_size, cfg.model.layers
    )
    bs = cfg.train.batch_size
    result = fit(
        model,
        lambda epoch: tensor_batches(x_train, y_train, bs, shuffle=True, seed=cfg.seed, epoch=epoch),
        nn.functional.cross_entropy,
        cfg.train,
        device,
        validate=lambda m: accuracy_of(m, lambda: tensor_batches(x_dev, y_dev, 1024), device),
    )
    return model, {
        "best_epoch": result.best_epoch,
        "dev_accuracy": result.best_score,
        "history": result.history,
    }


def predict_classes(model: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> np.ndarray:
    """Predicted classes ``[N]`` for ``x [N, T, F]``."""
    logits, _ = predict(model, tensor_batches(x, y, 1024), device)
    return logits.argmax(-1).numpy()


def run_image_rows(cfg: ImageRowsConfig) -> dict:
    """Train the row classifier, measure test accuracy (ordered and shuffled rows) and write the run's outputs."""
    device, run_dir = setup(cfg)
    data = load_images(cfg)
    n_classes = len(data.classes)
    y_all = data.labels["train"]
    keep = np.arange(len(y_all))
    if 0 < cfg.data.max_train < len(y_all):
        keep = stratified_split(y_all, [cfg.data.max_train / len(y_all)], cfg.seed)[0]
    dev_part, train_part = stratified_split(y_all[keep], [min(cfg.data.dev_size / len(keep), 1.0)], cfg.seed)
    train_idx, dev_idx = keep[train_part], keep[dev_part]
    n_test = cfg.data.max_test or len(data.labels["test"])
    x_all, x_test = as_rows(data.images["train"]), as_rows(data.images["test"][:n_test])
    y_all_t, y_test = torch.from_numpy(y_all), torch.from_numpy(data.labels["test"][:n_test])
    x_train, y_train = x_all[train_idx], y_all_t[train_idx]
    x_dev, y_dev = x_all[dev_idx], y_all_t[dev_idx]
    log.info(
        "rows: %d steps x %d features; train %d, dev %d, test %d",
        *x_train.shape[1:],
        len(y_train),
        len(y_dev),
        n_test,
    )

    model, ordered_fit = train_classifier(cfg, x_train, y_train, x_dev, y_dev, n_classes, device)
    pred = predict_classes(model, x_test, y_test, device)
    report = classification_report(y_test.numpy(), pred, data.classes)
    perm = row_permutation(x_train.shape[1], cfg.order.permutation_seed)
    shuffled_at_test = float(
        (predict_classes(model, x_test[:, perm], y_test, device) == y_test.numpy()).mean()
    )
    order = {"permutation": perm.tolist(), "ordered_model_on_shuffled_rows": shuffled_at_test}
    if cfg.order.train_permuted:
        permuted_model, permuted_fit = train_classifier(
            cfg, x_train[:, perm], y_train, x_dev[:, perm], y_dev, n_classes, device
        )
        permuted_pred = predict_classes(permuted_model, x_test[:, perm], y_test, device)
        order["permuted_model_on_shuffled_rows"] = float((permuted_pred == y_test.numpy()).mean())
        order["permuted_model_best_epoch"] = permuted_fit["best_epoch"]
        order["permuted_model_dev_accuracy"] = permuted_fit["dev_accuracy"]

    save_checkpoint({"state_dict": model.state_dict()}, run_dir / "model.pt")
    n_samples = min(cfg.samples, n_test)
    plot_image_samples(
        data.images["test"][:n_samples],
        y_test[:n_samples].numpy(),
        pred[:n_samples],
        data.classes,
        run_dir / "samples.png",
        title=f"{cfg.model.cell} over rows: predicted / true",
    )
    plot_confusion(np.asarray(report["confusion_matrix"]), data.classes, run_dir / "confusion.png", "test")
    metrics = {
        "source": str(cfg.data.source),
        "sizes": {"train": len(y_train), "dev": len(y_dev), "test": n_test},
        "steps": int(x_train.shape[1]),
        "features": int(x_train.shape[2]),
        "test_accuracy": report["accuracy"],
        **{k: v for k, v in report.items() if k != "accuracy"},
        "row_order": order,
        "training": ordered_fit,
    }
    write_metrics(run_dir, metrics)
    print(format_table(report["per_class"]))
    print(f"test accuracy {100 * report['accuracy']:.2f}% (ordered rows)")
    print(f"test accuracy {100 * shuffled_at_test:.2f}% (same model, rows shuffled at test time)")
    if "permuted_model_on_shuffled_rows" in order:
        print(
            f"test accuracy {100 * order['permuted_model_on_shuffled_rows']:.2f}% (model trained on shuffled rows)"
        )
    return metrics
