"""sacrebleu metrics: same numbers as sacrebleu itself, multi-reference, file errors, table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu

from nmt.errors import NmtError
from nmt.evaluate import format_table, read_lines, read_streams, score_corpus, score_files, write_json

HYPS = [
    "Au commencement, Dieu créa les cieux et la terre.",
    "La terre était informe et vide.",
    "Dieu dit : Que la lumière soit ! Et la lumière fut.",
    "Dieu vit que la lumière était bonne.",
]
REF1 = [
    "Au commencement, Dieu créa le ciel et la terre.",
    "La terre était sans forme et vide.",
    "Dieu dit : Que la lumière soit ! Et la lumière fut.",
    "Dieu vit que la lumière était bonne ; et Dieu sépara la lumière des ténèbres.",
]
REF2 = [
    "Au commencement Dieu créa les cieux et la terre.",
    "Et la terre était informe et vide.",
    "Et Dieu dit : Que la lumière soit. Et la lumière fut.",
    "Et Dieu vit la lumière, qu'elle était bonne.",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_same_numbers_as_sacrebleu(tmp_path: Path) -> None:
    hyp, ref1, ref2 = (
        write(tmp_path / "hyp.fr", HYPS),
        write(tmp_path / "r1.fr", REF1),
        write(tmp_path / "r2.fr", REF2),
    )
    for refs in ([REF1], [REF1, REF2]):
        paths = [ref1, ref2][: len(refs)]
        results = score_files(hyp, paths)
        assert results["bleu"] == sacrebleu.corpus_bleu(HYPS, refs).score
        assert results["chrf"] == sacrebleu.corpus_chrf(HYPS, refs).score
        assert results["ter"] == sacrebleu.corpus_ter(HYPS, refs).score
        assert results["n_sentences"] == 4 and results["n_refs"] == len(refs)
        assert results["ref_files"] == [str(p) for p in paths]
        assert results["bleu_details"]["precisions"] == sacrebleu.corpus_bleu(HYPS, refs).precisions
        signatures = results["signatures"]
        assert signatures["bleu"].startswith(
            f"nrefs:{len(refs)}|case:mixed|eff:no|tok:13a|smooth:exp|version:"
        )
        assert signatures["chrf"].startswith(f"nrefs:{len(refs)}|case:mixed|eff:yes|nc:6|nw:0|space:no")
        assert signatures["ter"].startswith(f"nrefs:{len(refs)}|case:lc|tok:tercom")
    assert "by_refs" not in score_files(hyp, [ref1])


def test_multi_reference_scores_at_least_single() -> None:
    results = score_corpus(HYPS, [REF1, REF2])
    single, multi = results["by_refs"]["single"], results["by_refs"]["multi"]
    assert single["bleu"] == sacrebleu.corpus_bleu(HYPS, [REF1]).score
    assert multi["bleu"] == results["bleu"] == sacrebleu.corpus_bleu(HYPS, [REF1, REF2]).score
    assert multi["bleu"] > single["bleu"]  # line 1 matches REF2's "les cieux" exactly
    assert multi["chrf"] >= single["chrf"] and multi["ter"] <= single["ter"]
    assert single["signatures"]["bleu"].startswith("nrefs:1|") and multi["signatures"]["bleu"].startswith(
        "nrefs:2|"
    )
    json.dumps(results)  # JSON-ready


def test_perfect_and_empty_hypotheses() -> None:
    assert score_corpus(REF1, [REF1])["bleu"] == pytest.approx(100.0)
    assert score_corpus(REF1, [REF1])["ter"] == 0.0
    with pytest.raises(NmtError, match="no hypotheses"):
        score_corpus([], [[]])


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    hyp = write(tmp_path / "hyp.fr", HYPS)
    short = write(tmp_path / "short.fr", REF1[:3])
    with pytest.raises(NmtError) as err:
        read_streams(hyp, [write(tmp_path / "ok.fr", REF1), short])
    assert str(hyp) in str(err.value) and str(short) in str(err.value)
    assert "4 lines" in str(err.value) and "has 3" in str(err.value)
    with pytest.raises(NmtError, match="stream 2 has 3 lines"):
        score_corpus(HYPS, [REF1, REF2[:3]])


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(NmtError, match="missing.fr: file not found"):
        score_files(write(tmp_path / "hyp.fr", HYPS), [tmp_path / "missing.fr"])
    bad = tmp_path / "latin1.fr"
    bad.write_bytes("ok\nd\xe9j\xe0\n".encode("latin-1"))
    with pytest.raises(NmtError, match=r"latin1.fr:2: invalid UTF-8"):
        read_lines(bad)


def test_read_lines_splits_on_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes("a\u2028b\r\n\nc\x0cd".encode())  # U+2028 and form feed are not line breaks here
    assert read_lines(path) == ["a\u2028b", "", "c\x0cd"]


def test_table_and_json(tmp_path: Path) -> None:
    results = score_corpus(HYPS, [REF1, REF2])
    table = format_table(results).splitlines()
    assert table[0].split() == ["metric", "refs", "score", "signature"]
    assert table[1].split()[:3] == ["BLEU", "2", f"{results['bleu']:.2f}"]
    assert table[4].split()[:4] == ["BLEU", "1", "(first)", f"{results['by_refs']['single']['bleu']:.2f}"]
    assert table[-1] == "4 sentences"
    out = tmp_path / "sub" / "eval_test.json"
    write_json(results, out)
    assert json.loads(out.read_text(encoding="utf-8")) == results
