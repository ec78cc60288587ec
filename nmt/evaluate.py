"""Corpus metrics with sacrebleu: BLEU, chrF and TER, with the signatures that make scores comparable.

Hypotheses are one list of detokenized lines; references are one or more *streams*, each a list of lines
aligned with the hypotheses (``refs[k][i]`` is the k-th reference of line i), as sacrebleu takes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from sacrebleu.metrics import BLEU, CHRF, TER

from nmt.config import EvaluateConfig
from nmt.data import text
from nmt.errors import NmtError

METRICS = {"bleu": ("BLEU", BLEU), "chrf": ("chrF", CHRF), "ter": ("TER", TER)}  # key -> (label, class)


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 (optionally gzipped) text file, split on ``\\n`` only, read by the corpus reader
    (:func:`nmt.data.text.read_lines`: file:line errors for invalid UTF-8 or NUL bytes); an empty file has none."""
    path = Path(path)
    if not path.is_file():
        raise NmtError(f"{path}: file not found (expected a text file with one sentence per line)")
    if path.stat().st_size == 0:
        return []
    return [line for _, line in text.read_lines(path)]


def read_streams(hyp_path: str | Path, ref_paths: Sequence[str | Path]) -> tuple[list[str], list[list[str]]]:
    """A hypothesis file and one or more reference files, checked to have the same number of lines."""
    if not ref_paths:
        raise NmtError(f"{hyp_path}: no reference file given to score it against")
    hyps = read_lines(hyp_path)
    refs = [read_lines(path) for path in ref_paths]
    for path, stream in zip(ref_paths, refs):
        if len(stream) != len(hyps):
            raise NmtError(
                f"{hyp_path} has {len(hyps)} lines but {path} has {len(stream)}; "
                "hypotheses and references must be line-aligned"
            )
    return hyps, refs


def _scores(hyps: list[str], refs: list[list[str]]) -> dict[str, Any]:
    """BLEU, chrF and TER of ``hyps`` against all streams of ``refs``, with signatures."""
    result: dict[str, Any] = {"signatures": {}}
    for key, (_, metric_class) in METRICS.items():
        metric = metric_class()
        score = metric.corpus_score(hyps, refs)
        result[key] = score.score
        result["signatures"][key] = str(metric.get_signature())
        if key == "bleu":
            result["bleu_details"] = {
                "precisions": list(score.precisions),
                "bp": score.bp,
                "ratio": score.ratio,
                "hyp_len": score.sys_len,
                "ref_len": score.ref_len,
            }
    return result


def score_corpus(hyps: list[str], refs: list[list[str]]) -> dict[str, Any]:
    """Score detokenized hypotheses against reference streams; a JSON-ready dict.

    Keys: ``n_sentences``, ``n_refs``, ``bleu``, ``chrf``, ``ter`` (against all streams), ``bleu_details``
    (n-gram precisions, brevity penalty, lengths) and ``signatures``. With several streams, ``by_refs`` holds
    the same scores against the first stream alone (``single``) and against all of them (``multi``).
    """
    if not refs:
        raise NmtError("no reference stream given to score against")
    if not hyps:
        raise NmtError("no hypotheses to score (empty input)")
    for k, stream in enumerate(refs):
        if len(stream) != len(hyps):
            raise NmtError(
                f"reference stream {k + 1} has {len(stream)} lines but there are {len(hyps)} hypotheses; "
                "hypotheses and references must be line-aligned"
            )
    results: dict[str, Any] = {"n_sentences": len(hyps), "n_refs": len(refs), **_scores(hyps, refs)}
    if len(refs) > 1:
        multi = {key: results[key] for key in (*METRICS, "bleu_details", "signatures")}
        results["by_refs"] = {"single": _scores(hyps, refs[:1]), "multi": multi}
    return results


def score_files(hyp_path: str | Path, ref_paths: Sequence[str | Path]) -> dict[str, Any]:
    """:func:`score_corpus` of files, plus ``hyp_file`` and ``ref_files``."""
    hyps, refs = read_streams(hyp_path, ref_paths)
    return {"hyp_file": str(hyp_path), "ref_files": [str(p) for p in ref_paths], **score_corpus(hyps, refs)}


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`score_corpus`'s results: metric, references used, score, signature."""
    n_refs = results["n_refs"]
    rows = [
        (label, str(n_refs), results[key], results["signatures"][key]) for key, (label, _) in METRICS.items()
    ]
    single = results.get("by_refs", {}).get("single")
    if single:
        rows += [
            (label, "1 (first)", single[key], single["signatures"][key])
            for key, (label, _) in METRICS.items()
        ]
    header = ("metric", "refs", "score", "signature")
    lines = [(label, refs, f"{score:.2f}", sig) for label, refs, score, sig in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(3)]
    table = [
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip()
        for a, b, c, d in [header, *lines]
    ]
    return "\n".join([*table, f"{results['n_sentences']} sentences"])


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


def evaluate_model(cfg: EvaluateConfig) -> dict[str, Any]:
    """``scripts/evaluate.py``: score ``cfg.hyp`` against ``cfg.refs``, or translate a corpus split with the
    model in ``cfg.model_dir`` and score it against the split's references (single and multi-reference).

    Writes the JSON results (``output``, by default ``<model_dir>/eval/<split>.json``) and next to it the
    source, hypothesis and first-reference texts with the same stem (``.src``, ``.hyp``, ``.ref``); returns the
    results.
    """
    from nmt.data.corpus import load_corpus
    from nmt.translate import Translator, write_text_atomic

    if cfg.hyp is not None:
        results = score_files(cfg.hyp, cfg.refs)
        out = Path(cfg.output or f"{cfg.hyp}.scores.json")
    else:
        if cfg.model_dir is None:
            raise NmtError(
                "give model_dir=RUN_DIR (to translate a split) or hyp=FILE refs=[FILE,...] (to score)"
            )
        translator = Translator.from_config(cfg)
        data = translator.config.data
        if cfg.ref_versions is not None:
            data.bible.ref_versions = list(cfg.ref_versions)
        splits, _ = load_corpus(data)
        if cfg.split not in splits:
            raise NmtError(f"split={cfg.split!r} is not one of {sorted(splits)}")
        sources, refs = split_streams(splits[cfg.split])
        if cfg.refs:
            refs = [read_lines(path) for path in cfg.refs]
        started = time.perf_counter()
        translations = translator.translate(sources, cfg.search)
        seconds = time.perf_counter() - started
        hyps = [t.text for t in translations]
        # The texts sit next to the JSON with its stem, so that evaluations of other settings keep their own.
        out = Path(cfg.output or Path(cfg.model_dir) / "eval" / f"{cfg.split}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out.with_suffix(".src"), "".join(s + "\n" for s in sources))
        write_text_atomic(out.with_suffix(".hyp"), "".join(h + "\n" for h in hyps))
        write_text_atomic(out.with_suffix(".ref"), "".join(r + "\n" for r in refs[0]))
        out_tokens = sum(len(t.nbest[0].tokens) + 1 for t in translations if t.nbest)
        results = {
            "model_dir": str(cfg.model_dir),
            "split": cfg.split,
            "beam_size": cfg.search.beam_size,
            "weights": {
                "checkpoint": cfg.checkpoint,
                "average": cfg.average,
                "ensemble_last": cfg.ensemble_last,
            },
            "search": OmegaConf.to_container(OmegaConf.structured(cfg.search), enum_to_str=True),
            "decode_seconds": seconds,
            "sentences_per_second": len(sources) / seconds if seconds else 0.0,
            "target_tokens_per_second": out_tokens / seconds if seconds else 0.0,
            **score_corpus(hyps, refs),
        }
    write_json(results, out)
    print(format_table(results))
    print(f"scores written to {out}")
    return results
