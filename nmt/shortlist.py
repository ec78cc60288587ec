"""A vocabulary shortlist for search, the trick of fast CPU decoders (Marian's lexical shortlist): each decoding
batch scores only a few hundred target pieces instead of the whole vocabulary.

The shortlist of a batch is the union of

* the ``shortlist_frequent`` most frequent target pieces of the training data,
* for each source piece in the batch, the ``shortlist_per_source`` target pieces that the *lexicon* lists for it,
* the special ids (PAD, UNK, BOS, EOS).

The lexicon is learned from the training pairs' token ids by co-occurrence: ``c(s, t)`` counts the pairs whose
source has piece ``s`` and whose target has piece ``t`` (``X^T Y`` of the binary pair-by-piece matrices), and the
targets of ``s`` are ranked by the Dice coefficient ``2 c(s, t) / (c(s) + c(t))`` (ties: smaller id first).
Dice, unlike ``c(s, t)`` alone, does not rank the frequent targets first for every source piece: those are the
``shortlist_frequent`` list's job. Training writes it as ``lexicon.npz`` into the model directory; ``nmt lexicon``
adds it to an older one. It is an optional file: a directory without one translates over the full vocabulary.

Search itself does not change: :class:`ShortlistModel` wraps the model behind the same decoding protocol, in
*shortlist space*. Its token ids are positions in the sorted shortlist; the specials are the smallest ids
(``nmt.vocab``), so their positions equal their ids and search's PAD/BOS/EOS rules hold unchanged. The model
step maps those positions to real ids, runs the decoder, and computes the output layer only for the shortlisted
rows (sliced once per batch), with the softmax over the shortlist: a renormalised restriction of the full
distribution. :func:`shortlist_search` maps the hypotheses' tokens back to real ids.
"""

from __future__ import annotations

import dataclasses
import functools
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.config import LexiconConfig, LexiconSettings, SearchConfig
from nmt.errors import NmtError
from nmt.model.ensemble import Ensemble
from nmt.model.folded import FoldedModel
from nmt.model.seq2seq import Seq2Seq
from nmt.search import Hypothesis, search
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

if TYPE_CHECKING:
    import datasets
    from scipy import sparse

LEXICON_FILE = "lexicon.npz"
LEXICON_FORMAT = 1  # bump when the arrays in the file change
SPECIALS = np.array(sorted((PAD_ID, UNK_ID, BOS_ID, EOS_ID)))
# Shortlist space keeps search's rules only because sorted shortlists start with the specials at their own ids.
assert (np.arange(len(SPECIALS)) == SPECIALS).all(), "the special ids must be 0..n-1"


@dataclass(frozen=True)
class Lexicon:
    """What a shortlist is drawn from: ``table`` ``[src_vocab, per_source]`` int32, the best target pieces of each
    source piece, best first, padded with -1; ``frequent`` ``[tgt_vocab]`` int32, every target piece, most frequent
    in the training targets first."""

    table: np.ndarray
    frequent: np.ndarray


@dataclass(frozen=True)
class Shortlist:
    """A lexicon with the sizes a search config draws from it."""

    lexicon: Lexicon
    frequent: int  # search.shortlist_frequent
    per_source: int  # search.shortlist_per_source

    def __post_init__(self) -> None:
        listed = self.lexicon.table.shape[1]
        if self.per_source > listed:
            raise NmtError(
                f"search.shortlist_per_source={self.per_source}, but the lexicon lists {listed} target pieces "
                f"per source piece: lower it, or rebuild the lexicon (nmt lexicon model_dir=... per_source=N)"
            )

    def ids(self, src: Tensor) -> Tensor:
        """The sorted unique target ids to score for the source batch ``src`` ``[batch, src_len]`` (padding
        included: PAD's row lists nothing): ``[n]`` long on ``src``'s device, always starting with the specials."""
        table, frequent = self.lexicon.table, self.lexicon.frequent
        listed = table[np.unique(src.cpu().numpy()), : self.per_source].ravel()
        ids = np.unique(np.concatenate([SPECIALS, frequent[: self.frequent], listed[listed >= 0]]))
        return torch.from_numpy(ids.astype(np.int64)).to(src.device)


# ------------------------------------------------------------------------------------------ building
def build_lexicon(
    src_rows: np.ndarray,
    src_ids: np.ndarray,
    tgt_rows: np.ndarray,
    tgt_ids: np.ndarray,
    n_pairs: int,
    vocab: tuple[int, int],
    per_source: int,
) -> Lexicon:
    """The lexicon of ``n_pairs`` sentence pairs given as flat token arrays: token ``k`` of the sources is
    ``src_ids[k]``, in pair ``src_rows[k]`` (the same for the targets). ``vocab`` is (source, target) size."""
    src = _incidence(src_rows, src_ids, n_pairs, vocab[0])
    tgt = _incidence(tgt_rows, tgt_ids, n_pairs, vocab[1])
    both = (src.T.tocsr() @ tgt).tocoo()  # [src_vocab, tgt_vocab]: c(s, t)
    src_count, tgt_count = np.asarray(src.sum(axis=0)).ravel(), np.asarray(tgt.sum(axis=0)).ravel()
    dice = 2.0 * both.data / (src_count[both.row] + tgt_count[both.col])
    order = np.lexsort((both.col, -dice, both.row))  # by source piece, best first, ties to the smaller id
    rows, cols = both.row[order], both.col[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within the source piece's row
    keep = rank < per_source
    table = np.full((vocab[0], per_source), -1, dtype=np.int32)
    table[rows[keep], rank[keep]] = cols[keep]
    tokens = np.bincount(tgt_ids, minlength=vocab[1])  # every occurrence counts for the frequent list
    return Lexicon(table, np.argsort(-tokens, kind="stable").astype(np.int32))


def _incidence(rows: np.ndarray, ids: np.ndarray, n_rows: int, vocab: int) -> sparse.csr_matrix:
    """``[n_rows, vocab]`` int64 0/1: whether pair ``r`` has piece ``v`` (a piece counts once per sentence)."""
    from scipy import sparse  # only to build a lexicon: translation never needs scipy

    matrix = sparse.csr_matrix(
        (np.ones(len(ids), dtype=np.int64), (rows, ids)), shape=(n_rows, vocab), dtype=np.int64
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


def lexicon_from_pairs(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], vocab: tuple[int, int], per_source: int
) -> Lexicon:
    """:func:`build_lexicon` of pairs given as lists of ids (small corpora, tests)."""

    def flat(side: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.array([len(ids) for ids in side], dtype=np.int64)
        values = np.fromiter((i for ids in side for i in ids), dtype=np.int64, count=int(lengths.sum()))
        return np.repeat(np.arange(len(side)), lengths), values

    return build_lexicon(*flat(src), *flat(tgt), len(src), vocab, per_source)


def lexicon_from_split(split: datasets.Dataset, vocab: tuple[int, int], settings: LexiconSettings) -> Lexicon:
    """:func:`build_lexicon` of a tokenized split's ``src_ids``/``tgt_ids`` columns, read from Arrow without a
    Python object per token; at most ``settings.max_pairs`` pairs, evenly spaced (deterministic)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(split)
    if 0 < settings.max_pairs < n:
        split = split.select(np.arange(settings.max_pairs, dtype=np.int64) * n // settings.max_pairs)
    arrow = split.with_format("arrow")
    sides = []
    for column in ("src_ids", "tgt_ids"):
        lists = arrow[column]
        if isinstance(lists, pa.ChunkedArray):  # one array: parent indices count from its first row
            lists = lists.combine_chunks()
        sides += [
            pc.list_parent_indices(lists).to_numpy(),
            pc.list_flatten(lists).to_numpy().astype(np.int64),
        ]
    return build_lexicon(*sides, len(split), vocab, settings.per_source)


# ------------------------------------------------------------------------------------------ the file
def save_lexicon(lexicon: Lexicon, model_dir: str | Path) -> Path:
    """Write ``model_dir/lexicon.npz`` through a temp file and a rename (all there or not at all); its path."""
    path = Path(model_dir) / LEXICON_FILE
    temp = path.with_name(f".tmp-{path.name}")
    try:
        with open(temp, "wb") as handle:
            np.savez(
                handle,
                version=np.int64(LEXICON_FORMAT),
                table=lexicon.table.astype(np.int32),
                frequent=lexicon.frequent.astype(np.int32),
            )
        temp.replace(path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise NmtError(f"{path}: cannot write the lexicon: {exc.strerror or exc}") from exc
    return path


def load_lexicon(model_dir: str | Path, vocab: tuple[int, int]) -> Lexicon | None:
    """``model_dir/lexicon.npz`` for a model of ``vocab`` (source, target) pieces; None when there is none.

    Raises:
        NmtError: naming the file, when it cannot be read or does not fit the model's vocabularies.
    """
    path = Path(model_dir) / LEXICON_FILE
    if not path.is_file():
        return None
    rebuild = f"rebuild it with `nmt lexicon model_dir={model_dir}`"
    try:
        with np.load(path, allow_pickle=False) as data:
            version, table, frequent = data["version"], data["table"], data["frequent"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise NmtError(f"{path}: not a readable lexicon ({exc}); {rebuild}") from exc
    problem = _lexicon_problem(version, table, frequent, vocab)
    if problem:
        raise NmtError(f"{path}: {problem}; {rebuild}")
    return Lexicon(table, frequent)


def _lexicon_problem(
    version: np.ndarray, table: np.ndarray, frequent: np.ndarray, vocab: tuple[int, int]
) -> str:
    """What is wrong with the arrays of a lexicon file, or ``""``."""
    if version.shape != () or int(version) != LEXICON_FORMAT:
        return f"lexicon format {version}, this nmt reads format {LEXICON_FORMAT}"
    if table.dtype != np.int32 or frequent.dtype != np.int32 or table.ndim != 2 or frequent.ndim != 1:
        return (
            "expected int32 arrays table [src_vocab, K] and frequent [tgt_vocab], got "
            f"{table.dtype} {list(table.shape)} and {frequent.dtype} {list(frequent.shape)}"
        )
    if (table.shape[0], frequent.shape[0]) != vocab:
        return (
            f"made for {table.shape[0]} source and {frequent.shape[0]} target pieces, but the model has "
            f"{vocab[0]} and {vocab[1]}"
        )
    if table.size and not (table.min() >= -1 and table.max() < vocab[1]):
        return f"target ids outside [0, {vocab[1]})"
    if not np.array_equal(np.sort(frequent), np.arange(vocab[1])):
        return "the frequent list is not an ordering of the target vocabulary"
    return ""


def lexicon_command(cfg: LexiconConfig) -> None:
    """``nmt lexicon model_dir=...``: rebuild the training pairs from the directory's config (the corpus and
    token caches make that quick) and write its ``lexicon.npz``."""
    import shutil
    import tempfile
    import time

    from nmt.data.prepare import prepare_data
    from nmt.model_dir import read_model_config
    from nmt.tokenizer import CONFIG_FILE, Tokenizer

    model_dir = Path(cfg.model_dir)
    config = read_model_config(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    started = time.perf_counter()
    # prepare_data writes its summary into the run directory it is given: give it a scratch copy of the
    # tokenizer, so that the model directory keeps the summary of its training run
    with tempfile.TemporaryDirectory(prefix="nmt-lexicon-") as scratch:
        for file in [*tokenizer.files, model_dir / CONFIG_FILE]:
            if file.is_file():
                shutil.copy2(file, scratch)
        train = prepare_data(config, Path(scratch)).splits["train"]
        vocab = (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
        path = save_lexicon(lexicon_from_split(train, vocab, cfg), model_dir)
    print(f"{path}: from {len(train):,} training pairs in {time.perf_counter() - started:.1f} s")


# ------------------------------------------------------------------------------------------ search
def output_rows(layer: nn.Module, ids: Tensor) -> Callable[[Tensor], Tensor]:
    """The output layer ``layer`` restricted to its rows ``ids`` (``[n]``): ``[..., hidden]`` -> ``[..., n]``, of
    the same kind. An ``nn.Linear`` gives the product with its rows' weight and bias; a dynamically quantized one
    (int8, whose weight and bias are methods) gives an int8 layer holding the same int8 rows and scale, so an
    int8 model keeps its int8 output product under a shortlist and scores its rows exactly as without one."""
    weight, bias = layer.weight, layer.bias
    if callable(weight):  # torch.ao.nn.quantized.dynamic.Linear, imported only here: start-up stays lean
        from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

        weight, bias = weight(), bias()
        rows = Int8Linear(layer.in_features, ids.numel(), dtype=weight.dtype)
        rows.set_weight_bias(weight.index_select(0, ids), None if bias is None else bias.index_select(0, ids))
        return rows
    return functools.partial(
        F.linear, weight=weight.index_select(0, ids), bias=None if bias is None else bias.index_select(0, ids)
    )


class ShortlistModel(nn.Module):
    """``model`` (a Seq2Seq or a FoldedModel) restricted to the target ids ``ids`` (sorted, specials first) behind
    the decoding protocol, in shortlist space: ``decode_step`` takes and scores positions in ``ids``."""

    def __init__(self, model: Seq2Seq | FoldedModel, ids: Tensor) -> None:
        super().__init__()
        self.model = model
        self.ids = ids
        self.output = output_rows(model.output_layer, ids)  # sliced once per batch, not per step

    def encode(self, src: Tensor, src_lengths: Tensor) -> Any:
        """``model.encode``: ``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``."""
        return self.model.encode(src, src_lengths)

    def init_decoder_state(self, enc: Any) -> Any:
        """``model.init_decoder_state``."""
        return self.model.init_decoder_state(enc)

    def decode_step(self, prev_tokens: Tensor, state: Any, enc: Any) -> tuple[Tensor, Any, Tensor]:
        """``prev_tokens`` ``[rows]`` positions in the shortlist -> log-probs over the shortlist ``[rows, n]``
        (the full distribution's restriction, renormalised), the new state, attention ``[rows, src_len]``."""
        logits, state, weights = self.decode_step_logits(prev_tokens, state, enc)
        return torch.log_softmax(logits, dim=-1), state, weights

    def decode_step_logits(self, prev_tokens: Tensor, state: Any, enc: Any) -> tuple[Tensor, Any, Tensor]:
        """``decode_step`` before its ``log_softmax``: the shortlist's logits ``[rows, n]``. Search runs in eval
        mode, so the output layer's dropout is left out."""
        pre_output, state, weights = self.model.pre_output_step(self.ids[prev_tokens], state, enc)
        return self.output(pre_output), state, weights


def restrict(model: nn.Module, ids: Tensor) -> nn.Module:
    """``model`` (a Seq2Seq, or an Ensemble of them) in the shortlist space of ``ids``; an ensemble restricts
    each member, then mixes their shortlist distributions as it mixes full ones."""
    if isinstance(model, Ensemble):
        return Ensemble([restrict(member, ids) for member in model.members])
    if not isinstance(model, (Seq2Seq, FoldedModel)):
        raise NmtError(
            f"search.shortlist works with a Seq2Seq model or an ensemble of them, not {type(model).__name__}: "
            "set search.shortlist=false"
        )
    return ShortlistModel(model, ids)


def shortlist_search(
    model: nn.Module,
    shortlist: Shortlist,
    src: Tensor,
    src_lengths: Tensor,
    cfg: SearchConfig,
    attention: bool = True,
) -> list[list[Hypothesis]]:
    """:func:`nmt.search.search` of one batch (``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``) over
    the batch's shortlist; the hypotheses' tokens are real target ids."""
    ids = shortlist.ids(src)
    real = ids.cpu().numpy()
    return [
        [dataclasses.replace(h, tokens=real[h.tokens].tolist()) for h in nbest]
        for nbest in search(restrict(model, ids), src, src_lengths, cfg, attention)
    ]
