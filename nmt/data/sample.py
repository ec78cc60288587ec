"""The tokenizer's training text: a bounded, seeded, uniform random sample of the training split's sentences,
written to one text file per side.

sentencepiece keeps at most ``input_sentence_size`` sentences but reads all it is given, so a corpus of ten
million pairs must be sampled before it: here the sample is drawn window by window over the split (an exact
uniform draw of ``size`` rows, see :func:`sample_indices`), so memory holds one window's indices and texts,
whatever the corpus size, and the rows are read in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import datasets
import numpy as np

WINDOW = 100_000  # rows per window: the sample's indices and texts in memory at a time


def sample_indices(population: int, size: int, seed: int, window: int = WINDOW) -> Iterator[np.ndarray]:
    """``min(size, population)`` distinct indices of ``range(population)``, every such subset equally likely.

    Yields one ascending int64 array per window of ``window`` consecutive indices (possibly empty): how many
    fall into each window is drawn from the hypergeometric law given what the earlier windows took, which
    makes the whole an exact uniform sample without ever holding more than one window.
    """
    rng = np.random.default_rng(seed)
    wanted, left = min(size, population), population
    for start in range(0, population, window):
        width = min(window, population - start)
        if width == left:  # the last window takes what is still wanted
            take = wanted
        else:
            take = int(rng.hypergeometric(width, left - width, wanted)) if wanted else 0
        yield start + np.sort(rng.choice(width, size=take, replace=False))
        wanted, left = wanted - take, left - width


def _texts(column: datasets.Dataset, rows: np.ndarray) -> list[str]:
    """The texts of ``rows`` of a one-column dataset in Arrow format."""
    if not len(rows):
        return []
    return column[rows.tolist()].column(0).to_pylist()


def _write(out: TextIO, texts: list[str]) -> None:
    if texts:
        out.write("\n".join(texts) + "\n")


def write_sample(
    train: datasets.Dataset, size: int, joint: bool, seed: int, out_dir: Path
) -> tuple[Path, Path]:
    """Write the sample to ``out_dir/sample.src.txt`` and ``out_dir/sample.tgt.txt``; returns the two paths.

    ``joint``: ``size`` sentences in all, drawn from the 2N sentences of both sides (a joint model learns from
    both; each file holds its side's share). Otherwise each side gets the same ``size`` rows. ``size`` 0 (or
    beyond the split) takes every sentence. Sentences are one line each (cleaning guarantees it).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "sample.src.txt", out_dir / "sample.tgt.txt"
    n = len(train)
    population = 2 * n if joint else n
    src, tgt = (train.select_columns([side]).with_format("arrow") for side in ("src", "tgt"))
    with open(paths[0], "w", encoding="utf-8") as src_out, open(paths[1], "w", encoding="utf-8") as tgt_out:
        for rows in sample_indices(population, size or population, seed):
            src_rows, tgt_rows = (rows[rows < n], rows[rows >= n] - n) if joint else (rows, rows)
            _write(src_out, _texts(src, src_rows))
            _write(tgt_out, _texts(tgt, tgt_rows))
    return paths
