"""Evaluation: score a hypothesis file against reference files, or translate a corpus split and score it.

The metrics themselves (BLEU, chrF, TER and their signatures) are :mod:`nmt.metrics`'; this module reads and
writes the files around them.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nmt.config import EvaluateConfig
from nmt.errors import NmtError
from nmt.hub import output_dir
from nmt.lines import OnInvalid, read_lines
from nmt.metrics import CorpusScores, format_table, score_corpus

# lines scored at a time: sacrebleu's n-gram tables for them (~80 KB a line with two references) are what
# memory holds, whatever the files' length
SCORE_CHUNK_LINES = 1000


def _lines(path: str | Path) -> Iterator[str]:
    """The lines of a hypothesis or reference file as they are read, strict UTF-8 (errors name file and line)."""
    return (line for _, line in read_lines(path, on_invalid=OnInvalid.error))


def _file_lines(path: str | Path) -> list[str]:
    return list(_lines(path))


def read_streams(
    hyp_path: str | Path, ref_paths: Sequence[str | Path], chunk_lines: int = SCORE_CHUNK_LINES
) -> Iterator[tuple[list[str], list[list[str]]]]:
    """A hypothesis file and its reference files read in step, ``chunk_lines`` aligned lines at a time:
    ``(hyps, refs)`` with ``refs[k]`` the lines of ``ref_paths[k]``.

    Raises:
        NmtError: no reference file (at once); as reading reaches it, a file that is missing or not UTF-8, or
            files of different lengths (the message names both files and their line counts).
    """
    if not ref_paths:
        raise NmtError(f"{hyp_path}: no reference file given to score it against")
    return _aligned_chunks([hyp_path, *ref_paths], chunk_lines)


def _aligned_chunks(paths: list[str | Path], chunk_lines: int) -> Iterator[tuple[list[str], list[list[str]]]]:
    rows = itertools.zip_longest(*(_lines(path) for path in paths))  # None where a file has ended
    counts = [0] * len(paths)
    while chunk := list(itertools.islice(rows, chunk_lines)):
        columns = [list(column) for column in zip(*chunk)]
        counts = [count + len(column) - column.count(None) for count, column in zip(counts, columns)]
        if len(set(counts)) > 1:
            for row in rows:  # the longer files' lines, counted for the message
                counts = [count + (line is not None) for count, line in zip(counts, row)]
            path, count = next((p, c) for p, c in zip(paths[1:], counts[1:]) if c != counts[0])
            raise NmtError(
                f"{paths[0]} has {counts[0]} lines but {path} has {count}; "
                "hypotheses and references must be line-aligned"
            )
        yield columns[0], columns[1:]


def score_files(
    hyp_path: str | Path, ref_paths: Sequence[str | Path], chunk_lines: int = SCORE_CHUNK_LINES
) -> dict[str, Any]:
    """:func:`nmt.metrics.score_corpus` of files, plus ``hyp_file`` and ``ref_files``; the files are read and
    scored ``chunk_lines`` lines at a time (:class:`nmt.metrics.CorpusScores`), so memory holds one chunk."""
    chunks = read_streams(hyp_path, ref_paths, chunk_lines)
    scores = CorpusScores(len(ref_paths))
    for hyps, refs in chunks:
        scores.add(hyps, refs)
    return {"hyp_file": str(hyp_path), "ref_files": [str(p) for p in ref_paths], **scores.results()}


def write_json(results: dict[str, Any], path: str | Path) -> None:
    """Write ``results`` as indented UTF-8 JSON (parent directories created)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise NmtError(f"{path}: cannot write the scores: {exc.strerror}") from exc


def split_streams(split: Any) -> tuple[list[str], list[list[str]]]:
    """Sources and reference streams of a corpus split: ``tgt`` first, then each extra reference version."""
    refs = [list(split["tgt"])]
    extra = list(split["refs"]) if "refs" in split.column_names else []
    n_extra = min((len(r) for r in extra), default=0)
    refs += [[r[k] for r in extra] for k in range(n_extra)]
    return list(split["src"]), refs


def translate_split(cfg: EvaluateConfig, out: Path) -> dict[str, Any]:
    """Translate ``cfg.split`` with the model in ``cfg.model_dir`` and score it against the split's references
    (or ``cfg.refs``), single and multi-reference; returns the results with the weights, search settings and
    decoding speed.

    The source, hypothesis and first-reference texts are written next to ``out`` with its stem (``.src``,
    ``.hyp``, ``.ref``), so that evaluations of other settings keep their own.
    """
    from nmt.data.corpus import load_corpus
    from nmt.translate import Translator, write_text_atomic

    translator = Translator.from_config(cfg)
    data = translator.config.data
    if cfg.ref_versions is not None:
        data.bible.ref_versions = list(cfg.ref_versions)
    splits, _ = load_corpus(data)
    if cfg.split not in splits:
        raise NmtError(f"split={cfg.split!r} is not one of {sorted(splits)}")
    sources, refs = split_streams(splits[cfg.split])
    if cfg.refs:
        refs = [_file_lines(path) for path in cfg.refs]
    started = time.perf_counter()
    translations = translator.translate(sources, cfg.search, attention=False)
    seconds = time.perf_counter() - started
    hyps = [t.text for t in translations]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".src"), "".join(s + "\n" for s in sources))
    write_text_atomic(out.with_suffix(".hyp"), "".join(h + "\n" for h in hyps))
    write_text_atomic(out.with_suffix(".ref"), "".join(r + "\n" for r in refs[0]))
    out_tokens = sum(len(t.nbest[0].tokens) + 1 for t in translations if t.nbest)
    return {
        "model_dir": str(cfg.model_dir),
        "split": cfg.split,
        "beam_size": cfg.search.beam_size,
        "weights": {"checkpoint": cfg.checkpoint, "average": cfg.average, "ensemble_last": cfg.ensemble_last},
        "search": OmegaConf.to_container(OmegaConf.structured(cfg.search), enum_to_str=True),
        "decode_seconds": seconds,
        "sentences_per_second": len(sources) / seconds if seconds else 0.0,
        "target_tokens_per_second": out_tokens / seconds if seconds else 0.0,
        **score_corpus(hyps, refs),
    }


def evaluate_model(cfg: EvaluateConfig) -> dict[str, Any]:
    """``scripts/evaluate.py``: :func:`score_files` of ``cfg.hyp`` against ``cfg.refs`` when a hypothesis file
    is given, else :func:`translate_split` with the model in ``cfg.model_dir``.

    Writes the JSON results to ``cfg.output`` (by default ``<hyp>.scores.json``, or
    ``<model_dir>/eval/<split>.json``, ``./eval/<split>.json`` for an ``hf://`` model), prints them as a table
    and returns them.
    """
    if cfg.hyp is not None:
        out = Path(cfg.output or f"{cfg.hyp}.scores.json")
        results = score_files(cfg.hyp, cfg.refs)
    elif cfg.model_dir is not None:
        eval_dir = output_dir(cfg.model_dir, "eval")
        out = Path(cfg.output or eval_dir / f"{cfg.split}.json")
        results = translate_split(cfg, out)
    else:
        raise NmtError("give model_dir=RUN_DIR (to translate a split) or hyp=FILE refs=[FILE,...] (to score)")
    write_json(results, out)
    print(format_table(results))
    print(f"scores written to {out}")
    return results
