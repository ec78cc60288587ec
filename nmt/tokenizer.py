"""Subword tokenization with sentencepiece: one joint model for both languages, or one per side.

Every model trained here puts the toolkit's fixed special ids (:mod:`nmt.vocab`) first, and a tokenizer
saved in a model directory is all a translator needs to go from text to ids and back.

A joint model can be *trimmed* per side (``trim_vocab``): each side keeps the pieces its own training text
uses (and every single character), so a French target does not carry an output row for every English-only
piece. The side's file is the joint model with the other pieces marked unused — sentencepiece then segments
with the kept pieces only — and the kept pieces are renumbered densely (specials keep 0..3), which is the id
space the model sees.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sentencepiece as spm

from nmt.config import TokenizerConfig
from nmt.errors import NmtError
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

_DROPPED_ON_DECODE = frozenset((PAD_ID, BOS_ID, EOS_ID))  # UNK stays visible as sentencepiece's "⁇"

JOINT_PREFIX, SRC_PREFIX, TGT_PREFIX = "spm", "spm.src", "spm.tgt"
JOINT_FILE, SRC_FILE, TGT_FILE = (p + ".model" for p in (JOINT_PREFIX, SRC_PREFIX, TGT_PREFIX))
CONFIG_FILE = "tokenizer.json"  # the TokenizerConfig the files were trained with
_STAGING_PREFIX = ".tmp-tokenizer-"
_ENCODE_BLOCK = 10_000  # sentences encoded at a time while trimming


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    # sentencepiece counts an empty line as a sentence but learns nothing from it
    return (t for t in texts if t)


def train_sentencepiece(
    texts: Iterable[str], model_prefix: Path, cfg: TokenizerConfig
) -> spm.SentencePieceProcessor:
    """Train a sentencepiece model from an iterable of sentences; writes ``{model_prefix}.model/.vocab``.

    ``cfg`` gives the model type, vocabulary size, character coverage and sample size (``joint`` and
    ``trim_vocab`` are :meth:`Tokenizer.train`'s business). The special ids are :mod:`nmt.vocab`'s.
    ``cfg.vocab_size`` is an upper bound (``hard_vocab_limit=False``), so a tiny corpus gives a smaller
    vocabulary instead of an error. At most ``cfg.input_sentence_size`` sentences (a uniform sample) are used;
    the iterable is still read to its end, so callers with huge corpora should pass a subsample.
    """
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_non_empty(texts),
            model_prefix=str(model_prefix),
            vocab_size=cfg.vocab_size,
            model_type=str(cfg.model_type),
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            unk_surface="⁇",  # sentencepiece's default " ⁇ " would leave double spaces in detokenized text
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as exc:
        msg = str(exc)
        if "sentences_.empty()" in msg:
            raise NmtError(
                f"{model_prefix}: no training sentences for the tokenizer (the corpus is empty)"
            ) from exc
        if "smaller than required_chars" in msg:
            raise NmtError(
                f"{model_prefix}: tokenizer.vocab_size={cfg.vocab_size} is below the number of distinct characters "
                f"in the corpus; raise tokenizer.vocab_size or lower tokenizer.character_coverage ({msg})"
            ) from exc
        raise NmtError(f"{model_prefix}: sentencepiece training failed: {msg}") from exc
    finally:
        _return_freed_memory()
    return open_sentencepiece(model_prefix.with_name(model_prefix.name + ".model"))


def _return_freed_memory() -> None:
    """Hand the heap sentencepiece freed back to the system (glibc only; elsewhere nothing to do).

    Training on a large sample allocates gigabytes (a suffix array over every character) and frees them, but
    glibc keeps freed pages in the process: without this, the rest of the preparation, and the training that
    ``nmt train`` goes on to, would carry most of a gigabyte it no longer uses.
    """
    libc = ctypes.util.find_library("c")
    if libc is None:
        return
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
    if trim is not None:
        trim(0)


def open_sentencepiece(path: Path) -> spm.SentencePieceProcessor:
    """Open a sentencepiece model trained by :func:`train_sentencepiece`, checking nmt's fixed special ids."""
    if not path.is_file():
        raise NmtError(f"{path}: tokenizer model not found")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        raise NmtError(
            f"{path}: not a readable sentencepiece model ({exc}); retrain it with prepare_data"
        ) from exc
    ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise NmtError(
            f"{path}: special ids (pad, unk, bos, eos) are {ids}, nmt needs {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; "
            "train the model with nmt.tokenizer.train_sentencepiece"
        )
    return sp


def _config_dict(cfg: TokenizerConfig) -> dict[str, Any]:
    return {k: str(v) if hasattr(v, "value") else v for k, v in asdict(cfg).items()}


class SideVocab:
    """One side's sentencepiece model and the model-facing ids: sentencepiece's own ids, or, when the model has
    pieces marked unused (a trimmed side), the used pieces numbered 0..size-1 in their original order."""

    def __init__(self, sp: spm.SentencePieceProcessor) -> None:
        self.sp = sp
        used = [i for i in range(sp.get_piece_size()) if not sp.is_unused(i)]
        self.trimmed = len(used) < sp.get_piece_size()
        self.size = len(used)
        self._piece_id = used  # model id -> sentencepiece id
        self._model_id = {piece: i for i, piece in enumerate(used)}

    def encode(self, lines: list[str]) -> list[list[int]]:
        return self._to_model(self.sp.encode(lines, out_type=int))

    def sample(self, lines: list[str], alpha: float) -> list[list[int]]:
        """One segmentation per line drawn from all of them (sentencepiece's lattice sampling, Kudo 2018):
        with probability proportional to P(segmentation)^alpha for a unigram model, or with each merge dropped
        with probability alpha for BPE.

        The draws are not reproducible: sentencepiece's only seed is process-wide and also steers its trainer,
        so seeding it here would change every tokenizer trained later in the same process."""
        return self._to_model(
            self.sp.encode(lines, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=-1)
        )

    def _to_model(self, ids: list[list[int]]) -> list[list[int]]:
        if not self.trimmed:
            return ids
        return [[self._model_id[i] for i in seq] for seq in ids]

    def _to_pieces(self, ids: Sequence[int]) -> list[int]:
        return [self._piece_id[int(i)] for i in ids] if self.trimmed else [int(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(self._to_pieces([i for i in ids if i not in _DROPPED_ON_DECODE]))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in self._to_pieces(ids)]


def write_trimmed_model(joint_model: Path, keep: set[int], out: Path) -> None:
    """Copy ``joint_model`` to ``out`` with every normal piece outside ``keep`` marked unused."""
    from sentencepiece import sentencepiece_model_pb2  # protobuf: only training trims, translation never does

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(joint_model.read_bytes())
    normal, unused = (
        sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL,
        sentencepiece_model_pb2.ModelProto.SentencePiece.UNUSED,
    )
    for i, piece in enumerate(proto.pieces):
        if piece.type == normal and i not in keep:
            piece.type = unused
    out.write_bytes(proto.SerializeToString())


def _side_pieces(sp: spm.SentencePieceProcessor, text_file: Path) -> set[int]:
    """The pieces segmenting the lines of ``text_file``, plus every single character: the fallback that spells
    any word of known characters (without it an unseen word would collapse to one unk)."""
    used: set[int] = set()
    lines = _file_lines(text_file)
    while block := list(itertools.islice(lines, _ENCODE_BLOCK)):
        used.update(i for seq in sp.encode(block, out_type=int) for i in seq)
    return used | {i for i in range(sp.get_piece_size()) if len(sp.id_to_piece(i)) == 1}


def _fresh_out_dir(out_dir: str | Path) -> Path:
    """``out_dir``, created, without the staging directories of an earlier training that was killed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return out_dir


def _file_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            yield line.rstrip("\n")


def _write_lines(texts: Iterable[str], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for text in _non_empty(texts):
            out.write(text + "\n")


class Tokenizer:
    """Source and target sentencepiece models (the same object when ``joint`` and untrimmed)."""

    def __init__(self, src: spm.SentencePieceProcessor, tgt: spm.SentencePieceProcessor, files: list[Path]):
        self._src, self._tgt = SideVocab(src), SideVocab(tgt)
        self.files = files
        self.trimmed = self._src.trimmed or self._tgt.trimmed
        self.joint = src is tgt or self.trimmed  # a trimmed pair is one joint model, cut per side
        self.src_vocab_size: int = self._src.size
        self.tgt_vocab_size: int = self._tgt.size

    # ------------------------------------------------------------------------------------ build / load
    @classmethod
    def train(
        cls, src_texts: Iterable[str], tgt_texts: Iterable[str], cfg: TokenizerConfig, out_dir: Path
    ) -> Tokenizer:
        """Train on the given (training-split) sentences and save the model(s) plus ``tokenizer.json`` in out_dir.

        The sentences are written to text files first (see :meth:`train_files`): pass a bounded sample of a
        large corpus, as sentencepiece reads everything it is given.
        """
        out_dir = _fresh_out_dir(out_dir)
        with tempfile.TemporaryDirectory(prefix=_STAGING_PREFIX, dir=out_dir) as tmp:
            src_file, tgt_file = Path(tmp) / "src.txt", Path(tmp) / "tgt.txt"
            _write_lines(src_texts, src_file)
            _write_lines(tgt_texts, tgt_file)
            return cls._train_files(src_file, tgt_file, cfg, out_dir)

    @classmethod
    def train_files(cls, src_file: Path, tgt_file: Path, cfg: TokenizerConfig, out_dir: Path) -> Tokenizer:
        """Train on the sentences of two text files (one per line, e.g. :func:`nmt.data.sample.write_sample`'s)
        and save the model(s) plus ``tokenizer.json`` in out_dir. The files are streamed, never held in memory."""
        return cls._train_files(Path(src_file), Path(tgt_file), cfg, _fresh_out_dir(out_dir))

    @classmethod
    def _train_files(cls, src_file: Path, tgt_file: Path, cfg: TokenizerConfig, out_dir: Path) -> Tokenizer:
        # Train in a staging directory and move the files in, models last: a process killed meanwhile leaves no
        # half-written model that a resumed run would take for a trained tokenizer.
        with tempfile.TemporaryDirectory(prefix=_STAGING_PREFIX, dir=out_dir) as tmp:
            staging = Path(tmp)
            both = itertools.chain(_file_lines(src_file), _file_lines(tgt_file))
            if cfg.joint and cfg.trim_vocab:
                sp = train_sentencepiece(both, staging / JOINT_PREFIX, cfg)
                for text_file, name in ((src_file, SRC_FILE), (tgt_file, TGT_FILE)):
                    write_trimmed_model(staging / JOINT_FILE, _side_pieces(sp, text_file), staging / name)
                for suffix in (".model", ".vocab"):  # load() must find the trimmed pair, not the joint model
                    (staging / (JOINT_PREFIX + suffix)).unlink()
            elif cfg.joint:
                train_sentencepiece(both, staging / JOINT_PREFIX, cfg)
            else:
                train_sentencepiece(_file_lines(src_file), staging / SRC_PREFIX, cfg)
                train_sentencepiece(_file_lines(tgt_file), staging / TGT_PREFIX, cfg)
            (staging / CONFIG_FILE).write_text(
                json.dumps(_config_dict(cfg), indent=2) + "\n", encoding="utf-8"
            )
            for name in sorted(os.listdir(staging), key=lambda name: name.endswith(".model")):
                os.replace(staging / name, out_dir / name)
        return cls.load(out_dir)

    @classmethod
    def load(cls, model_dir: str | Path) -> Tokenizer:
        """Open ``spm.model`` (joint) or ``spm.src.model`` + ``spm.tgt.model`` from a run/model directory."""
        model_dir = Path(model_dir)
        if (model_dir / JOINT_FILE).is_file():
            sp = open_sentencepiece(model_dir / JOINT_FILE)
            return cls(sp, sp, [model_dir / JOINT_FILE])
        if (model_dir / SRC_FILE).is_file() or (model_dir / TGT_FILE).is_file():
            files = [model_dir / SRC_FILE, model_dir / TGT_FILE]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise NmtError(
                    f"{model_dir}: separate tokenizer models need {missing[0]} too; rerun prepare_data"
                )
            return cls(open_sentencepiece(files[0]), open_sentencepiece(files[1]), files)
        raise NmtError(
            f"{model_dir}: no tokenizer ({JOINT_FILE}, or {SRC_FILE} + {TGT_FILE}); "
            "run scripts/prepare_data.py with this run_dir first"
        )

    @staticmethod
    def exists(model_dir: str | Path) -> bool:
        """Whether ``model_dir`` holds tokenizer model files (possibly incomplete: :meth:`load` checks)."""
        return any((Path(model_dir) / f).is_file() for f in (JOINT_FILE, SRC_FILE, TGT_FILE))

    @staticmethod
    def saved_config(model_dir: str | Path) -> dict[str, Any] | None:
        """The TokenizerConfig (as a dict) the saved models were trained with, if recorded."""
        path = Path(model_dir) / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NmtError(
                f"{path}: unreadable tokenizer config ({exc}); delete it to skip the check"
            ) from exc

    @staticmethod
    def config_dict(cfg: TokenizerConfig) -> dict[str, Any]:
        """``cfg`` in the form :meth:`saved_config` returns, for comparison."""
        return _config_dict(cfg)

    def fingerprint(self) -> str:
        """A hash of the model files' bytes: two tokenizers with the same fingerprint encode identically."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(path.read_bytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------------------------ encode / decode
    def encode_src(self, lines: list[str]) -> list[list[int]]:
        """Source sentences to piece ids, no specials added."""
        return self._src.encode(list(lines))

    def encode_tgt(self, lines: list[str]) -> list[list[int]]:
        """Target sentences to piece ids, no specials added."""
        return self._tgt.encode(list(lines))

    def sample_src(self, lines: list[str], alpha: float) -> list[list[int]]:
        """Source sentences to sampled piece ids (subword regularisation, see :meth:`SideVocab.sample`)."""
        return self._src.sample(list(lines), alpha)

    def sample_tgt(self, lines: list[str], alpha: float) -> list[list[int]]:
        """Target sentences to sampled piece ids (subword regularisation, see :meth:`SideVocab.sample`)."""
        return self._tgt.sample(list(lines), alpha)

    def decode_src(self, ids: Sequence[int]) -> str:
        """Source piece ids back to text (pad/bos/eos dropped)."""
        return self._src.decode(ids)

    def decode_tgt(self, ids: Sequence[int]) -> str:
        """Target piece ids back to detokenized text (pad/bos/eos dropped; unk shows as "⁇")."""
        return self._tgt.decode(ids)

    def src_pieces(self, ids: Sequence[int]) -> list[str]:
        """Source ids to their pieces (``▁`` marks a word start), e.g. for attention-plot labels."""
        return self._src.pieces(ids)

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        """Target ids to their pieces."""
        return self._tgt.pieces(ids)
