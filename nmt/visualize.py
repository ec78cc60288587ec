"""Attention heatmaps: source tokens across, output tokens down, one figure per sentence or a grid of several.

Figures are built on matplotlib's Agg canvas (no display, no pyplot state) with DejaVu Sans, which has the
accented letters and sentencepiece's symbols. The size grows with the token counts and the label lengths, so
each cell and label stays readable at :data:`DPI`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from nmt.config import VisualizeConfig
from nmt.errors import NmtError

DPI = 150  # pixels per inch of the PNG; figure sizes are whole multiples of 1/DPI inch
FONT = "DejaVu Sans"
FONT_SIZE = 9
CELL = 0.3  # inches per token
CHAR = 0.08  # inches per label character (generous for DejaVu Sans at FONT_SIZE)
COLORBAR = 1.0  # inches to the right for the colour bar
WORD_START = "\u2581"  # sentencepiece's "▁": the piece starts a word
EMPTY_LABEL = "\u2423"  # "␣": a piece that is only "▁"
_SPECIAL = re.compile(r"<[^<>\s]+>")  # </s>, <unk>, ...: never merged with a neighbour


@dataclass
class AttentionItem:
    """One sentence for :func:`plot_attention_grid`: ``weights`` ``[len(tgt_tokens), len(src_tokens)]``."""

    src_tokens: list[str]
    tgt_tokens: list[str]
    weights: np.ndarray
    title: str | None = None


def clean_label(piece: str) -> str:
    """A piece as a tick label: without sentencepiece's ``▁`` marker (``"▁"`` alone shows as ``␣``)."""
    return piece.replace(WORD_START, "") or EMPTY_LABEL


def merge_subwords(pieces: Sequence[str], weights: np.ndarray, axis: int) -> tuple[list[str], np.ndarray]:
    """Merge subword pieces into words along ``axis`` of ``weights`` ``[tgt_len, src_len]``.

    A word starts at a piece beginning with ``▁`` (and at the first piece); special tokens such as ``</s>``
    stay words of their own. Source pieces (``axis=1``): the columns of a word are *summed*, the attention mass
    the output step puts on that word. Target pieces (``axis=0``): the rows of a word are *averaged*, the mean
    distribution of its pieces. Either way every row still sums to what it summed to before (1 for attention).

    Returns the words (pieces joined, ``▁`` removed) and the merged weights, a new float array.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape[axis] != len(pieces):
        raise ValueError(
            f"weights of shape {weights.shape} do not have {len(pieces)} entries along axis {axis}"
        )
    if not pieces:
        return [], weights.copy()
    starts = [
        i
        for i, piece in enumerate(pieces)
        if i == 0
        or piece.startswith(WORD_START)
        or _SPECIAL.fullmatch(piece)
        or _SPECIAL.fullmatch(pieces[i - 1])
    ]
    ends = [*starts[1:], len(pieces)]
    words = ["".join(pieces[a:b]).replace(WORD_START, "") or EMPTY_LABEL for a, b in zip(starts, ends)]
    merged = np.add.reduceat(weights, starts, axis=axis)
    if axis == 0:
        merged /= np.diff([*starts, len(pieces)])[:, None]
    return words, merged


def figure_size(src_labels: Sequence[str], tgt_labels: Sequence[str]) -> tuple[float, float]:
    """Inches ``(width, height)`` of one heatmap's panel, label margins included, colour bar excluded."""
    width = CELL * len(src_labels) + CHAR * max(map(len, tgt_labels), default=0) + 0.8
    height = CELL * len(tgt_labels) + CHAR * max(map(len, src_labels), default=0) + 0.8
    return _whole_pixels(max(width, 2.0)), _whole_pixels(max(height, 2.0))


def attention_figure(
    src_tokens: Sequence[str], tgt_tokens: Sequence[str], weights: np.ndarray, title: str | None = None
) -> Figure:
    """One heatmap: ``weights`` ``[len(tgt_tokens), len(src_tokens)]`` (a tensor or an array)."""
    return attention_grid_figure([AttentionItem(list(src_tokens), list(tgt_tokens), weights, title)], ncols=1)


def attention_grid_figure(
    items: Sequence[AttentionItem], ncols: int | None = None, title: str | None = None
) -> Figure:
    """Several heatmaps in a grid (``ncols`` per row, default up to 2), one shared colour bar."""
    if not items:
        raise NmtError("no sentences to plot")
    ncols = ncols or min(2, len(items))
    nrows = math.ceil(len(items) / ncols)
    labels = [
        ([clean_label(t) for t in it.src_tokens], [clean_label(t) for t in it.tgt_tokens]) for it in items
    ]
    sizes = [figure_size(src, tgt) for src, tgt in labels]
    sizes = [(w, h + (0.3 if it.title else 0.0)) for (w, h), it in zip(sizes, items)]
    widths = [max(sizes[i][0] for i in range(c, len(items), ncols)) for c in range(ncols)]
    heights = [
        max(sizes[i][1] for i in range(r * ncols, min((r + 1) * ncols, len(items)))) for r in range(nrows)
    ]
    size = (_whole_pixels(sum(widths) + COLORBAR), _whole_pixels(sum(heights) + (0.4 if title else 0.0)))
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(nrows, ncols, width_ratios=widths, height_ratios=heights)
    axes = []
    for i, (item, (src, tgt)) in enumerate(zip(items, labels)):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        image = _heatmap(ax, src, tgt, _matrix(item))
        if item.title:
            ax.set_title(item.title, fontfamily=FONT, fontsize=FONT_SIZE + 1)
        axes.append(ax)
    colorbar = fig.colorbar(image, ax=axes, shrink=0.8)
    colorbar.ax.tick_params(labelsize=FONT_SIZE)
    if title:
        fig.suptitle(title, fontfamily=FONT, fontsize=FONT_SIZE + 2)
    return fig


def plot_attention(
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    weights: np.ndarray,
    path_stem: str | Path,
    formats: Sequence[str] = ("png", "svg"),
    title: str | None = None,
) -> list[Path]:
    """Write one heatmap as ``<path_stem>.<format>`` for each format; returns the paths written."""
    return save_figure(attention_figure(src_tokens, tgt_tokens, weights, title), path_stem, formats)


def plot_attention_grid(
    items: Sequence[AttentionItem],
    path_stem: str | Path,
    formats: Sequence[str] = ("png", "svg"),
    ncols: int | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write several heatmaps in one figure as ``<path_stem>.<format>``; returns the paths written."""
    return save_figure(attention_grid_figure(items, ncols, title), path_stem, formats)


def save_figure(fig: Figure, path_stem: str | Path, formats: Sequence[str]) -> list[Path]:
    """Save ``fig`` once per format (parent directories created); NmtError for an unknown format."""
    supported = fig.canvas.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown:
        raise NmtError(f"unsupported figure format(s) {unknown}; use some of {sorted(supported)}")
    paths = [Path(f"{path_stem}.{fmt}") for fmt in formats]
    for path, fmt in zip(paths, formats):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # no date in SVG/PDF metadata, so the same plot gives the same file
            metadata = {"Date": None} if fmt in ("svg", "pdf") else None
            fig.savefig(path, format=fmt, dpi=DPI, metadata=metadata)
        except OSError as exc:
            raise NmtError(f"{path}: cannot write the figure: {exc.strerror}") from exc
    return paths


def _whole_pixels(inches: float) -> float:
    return math.ceil(inches * DPI) / DPI


def _matrix(item: AttentionItem) -> np.ndarray:
    weights = np.asarray(item.weights, dtype=float)
    if weights.shape != (len(item.tgt_tokens), len(item.src_tokens)):
        raise NmtError(
            f"attention weights have shape {weights.shape} but there are {len(item.tgt_tokens)} output and "
            f"{len(item.src_tokens)} source tokens"
        )
    return weights


def _heatmap(ax: Axes, src_labels: list[str], tgt_labels: list[str], weights: np.ndarray) -> AxesImage:
    """Draw ``weights`` ``[tgt, src]`` with source labels on top (rotated) and output labels on the left."""
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(src_labels)), labels=src_labels, rotation=90, fontfamily=FONT, fontsize=FONT_SIZE)
    ax.set_yticks(range(len(tgt_labels)), labels=tgt_labels, fontfamily=FONT, fontsize=FONT_SIZE)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.tick_params(length=0)
    ax.set_xlabel("source", fontfamily=FONT, fontsize=FONT_SIZE)
    ax.set_ylabel("output", fontfamily=FONT, fontsize=FONT_SIZE)
    return image


def visualize(cfg: VisualizeConfig) -> list[Path]:
    """``scripts/visualize.py``: one heatmap per sentence (and a grid), from a model or a dump; returns paths."""
    records: Iterable[dict]
    if cfg.attention_file:
        from nmt.attention_dump import read_attention_dump

        records = read_attention_dump(cfg.attention_file)  # read as far as max_sentences needs
    else:
        from nmt.lines import OnInvalid, read_lines
        from nmt.translate import Translator, attention_records

        if not cfg.model_dir:
            raise NmtError(
                'give model_dir=RUN_DIR with sentences="[...]" or input=FILE, or attention_file=FILE'
            )
        lines = read_lines(cfg.input, on_invalid=OnInvalid.replace) if cfg.input else []
        sentences = list(cfg.sentences) + [line for _, line in lines]
        if not sentences:
            raise NmtError('nothing to plot: give sentences="[...]" or input=FILE')
        translator = Translator.from_config(cfg)
        translations = translator.translate(sentences[: cfg.max_sentences], cfg.search)
        records = attention_records(translations, translator.tokenizer)
    from nmt.hub import output_dir

    out_dir = Path(cfg.out_dir or (output_dir(cfg.model_dir, "attention") if cfg.model_dir else "attention"))
    items = []
    for record in records:
        if not record["tgt_tokens"]:
            continue  # an empty input line has no alignment to draw
        src, tgt = list(record["src_tokens"]), list(record["tgt_tokens"])
        weights = np.asarray(record["attention"], dtype=np.float32)
        if cfg.word_level:
            src, weights = merge_subwords(src, weights, axis=1)
            tgt, weights = merge_subwords(tgt, weights, axis=0)
        items.append(AttentionItem(src, tgt, weights, title=_short(record["source"])))
        if len(items) == cfg.max_sentences:
            break
    paths: list[Path] = []
    for number, item in enumerate(items, start=1):
        stem = out_dir / f"attention_{number:02d}"
        paths += plot_attention(item.src_tokens, item.tgt_tokens, item.weights, stem, cfg.formats, item.title)
    if cfg.grid and len(items) > 1:
        paths += plot_attention_grid(items, out_dir / "attention_grid", cfg.formats)
    for path in paths:
        print(path)
    return paths


def _short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
