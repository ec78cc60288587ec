"""Evaluation's files: hypothesis and reference files scored as sacrebleu would, line alignment, file errors,
JSON results. The translate-a-split mode is tested with a trained model in tests/test_translate.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import sacrebleu

from nmt.config import EvaluateConfig
from nmt.errors import NmtError
from nmt.evaluate import evaluate_model, read_streams, score_files, write_json
from nmt.metrics import score_corpus

HYPS = ["Au commencement, Dieu créa les cieux et la terre.", "La terre était informe et vide."]
REF1 = ["Au commencement, Dieu créa le ciel et la terre.", "La terre était sans forme et vide."]
REF2 = ["Au commencement Dieu créa les cieux et la terre.", "Et la terre était informe et vide."]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_score_files_matches_sacrebleu(tmp_path: Path) -> None:
    hyp, ref1, ref2 = (
        write(tmp_path / "hyp.fr", HYPS),
        write(tmp_path / "r1.fr", REF1),
        write(tmp_path / "r2.fr", REF2),
    )
    for refs in ([REF1], [REF1, REF2]):
        paths = [ref1, ref2][: len(refs)]
        results = score_files(hyp, paths)
        assert results["bleu"] == sacrebleu.corpus_bleu(HYPS, refs).score
        assert results["hyp_file"] == str(hyp) and results["ref_files"] == [str(p) for p in paths]
        assert results["n_refs"] == len(refs) and results["n_sentences"] == 2


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    hyp = write(tmp_path / "hyp.fr", HYPS)
    short = write(tmp_path / "short.fr", REF1[:1])
    with pytest.raises(NmtError) as err:
        list(read_streams(hyp, [write(tmp_path / "ok.fr", REF1), short]))
    assert str(hyp) in str(err.value) and str(short) in str(err.value)
    assert "2 lines" in str(err.value) and "has 1" in str(err.value)
    with pytest.raises(NmtError, match="no reference file"):
        read_streams(hyp, [])


@pytest.mark.parametrize(("n_hyps", "n_refs"), [(20, 13), (13, 20), (14, 21), (21, 14)])
def test_a_mismatch_in_a_later_chunk_counts_the_whole_files(tmp_path: Path, n_hyps: int, n_refs: int) -> None:
    """Files that differ after the first chunk (inside a chunk, or where one ends on a chunk's edge)."""
    hyp = write(tmp_path / "hyp.fr", [f"h{i}" for i in range(n_hyps)])
    ok = write(tmp_path / "ok.fr", [f"o{i}" for i in range(n_hyps)])
    ref = write(tmp_path / "ref.fr", [f"r{i}" for i in range(n_refs)])
    chunks = read_streams(hyp, [ok, ref], chunk_lines=7)
    hyps, refs = next(chunks)
    assert hyps == [f"h{i}" for i in range(7)] and refs == [
        [f"o{i}" for i in range(7)],
        [f"r{i}" for i in range(7)],
    ]
    with pytest.raises(NmtError, match=rf"hyp.fr has {n_hyps} lines but \S*ref.fr has {n_refs};"):
        list(chunks)


def corpus(n_lines: int, seed: int) -> list[str]:
    """Short sentences over a small vocabulary, so that n-grams match often but not always."""
    rng = random.Random(seed)
    words = ["la", "terre", "était", "informe", "et", "vide", "Dieu", "dit", "lumière", "fut", "."]
    return [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(n_lines)]


@pytest.mark.slow
def test_chunked_scores_equal_the_one_shot_corpus_scores_exactly(tmp_path: Path) -> None:
    hyps, ref1, ref2 = corpus(2000, 1), corpus(2000, 2), corpus(2000, 3)
    paths = [write(tmp_path / "r1.fr", ref1), write(tmp_path / "r2.fr", ref2)]
    chunked = score_files(write(tmp_path / "hyp.fr", hyps), paths, chunk_lines=7)
    assert chunked == {
        "hyp_file": str(tmp_path / "hyp.fr"),
        "ref_files": [str(p) for p in paths],
        **score_corpus(hyps, [ref1, ref2]),
    }
    for key, corpus_score in (
        ("bleu", sacrebleu.corpus_bleu),
        ("chrf", sacrebleu.corpus_chrf),
        ("ter", sacrebleu.corpus_ter),
    ):
        assert chunked[key] == corpus_score(hyps, [ref1, ref2]).score
        assert chunked["by_refs"]["single"][key] == corpus_score(hyps, [ref1]).score
    assert chunked["n_sentences"] == 2000 and 0 < chunked["bleu"] < 100


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    hyp = write(tmp_path / "hyp.fr", HYPS)
    with pytest.raises(NmtError, match="missing.fr: file not found"):
        score_files(hyp, [tmp_path / "missing.fr"])
    bad = tmp_path / "latin1.fr"
    bad.write_bytes("ok\nd\xe9j\xe0\n".encode("latin-1"))
    with pytest.raises(NmtError, match=r"latin1.fr:2: invalid UTF-8"):
        score_files(bad, [write(tmp_path / "r1.fr", REF1)])


def test_evaluate_model_scores_a_hypothesis_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    hyp, ref = write(tmp_path / "hyp.fr", HYPS), write(tmp_path / "r1.fr", REF1)
    results = evaluate_model(EvaluateConfig(hyp=str(hyp), refs=[str(ref)]))
    out = tmp_path / "hyp.fr.scores.json"
    assert json.loads(out.read_text(encoding="utf-8")) == results
    assert results["bleu"] == sacrebleu.corpus_bleu(HYPS, [REF1]).score
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["metric", "refs", "score", "signature"]
    assert printed.endswith(f"scores written to {out}\n")


def test_evaluate_model_needs_a_model_or_a_hypothesis_file() -> None:
    with pytest.raises(NmtError, match="give model_dir=RUN_DIR"):
        evaluate_model(EvaluateConfig())


def test_json(tmp_path: Path) -> None:
    results = {"bleu": 12.5, "signatures": {"bleu": "nrefs:1|"}, "note": "é"}
    out = tmp_path / "sub" / "eval_test.json"
    write_json(results, out)
    assert json.loads(out.read_text(encoding="utf-8")) == results
    assert "é" in out.read_text(encoding="utf-8")  # readable, not \\u-escaped
