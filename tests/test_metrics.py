"""sacrebleu metrics: the same numbers as sacrebleu itself, multi-reference, alignment errors, the table."""

from __future__ import annotations

import json

import pytest
import sacrebleu

from nmt.errors import NmtError
from nmt.metrics import CorpusScores, format_table, score_corpus

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


@pytest.mark.parametrize("refs", [[REF1], [REF1, REF2]])
def test_same_numbers_and_signatures_as_sacrebleu(refs: list[list[str]]) -> None:
    results = score_corpus(HYPS, refs)
    assert results["bleu"] == sacrebleu.corpus_bleu(HYPS, refs).score
    assert results["chrf"] == sacrebleu.corpus_chrf(HYPS, refs).score
    assert results["ter"] == sacrebleu.corpus_ter(HYPS, refs).score
    assert results["n_sentences"] == 4 and results["n_refs"] == len(refs)
    assert results["bleu_details"]["precisions"] == sacrebleu.corpus_bleu(HYPS, refs).precisions
    signatures = results["signatures"]
    assert signatures["bleu"].startswith(f"nrefs:{len(refs)}|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert signatures["chrf"].startswith(f"nrefs:{len(refs)}|case:mixed|eff:yes|nc:6|nw:0|space:no")
    assert signatures["ter"].startswith(f"nrefs:{len(refs)}|case:lc|tok:tercom")
    assert ("by_refs" in results) == (len(refs) > 1)


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


def test_perfect_empty_and_misaligned_hypotheses() -> None:
    assert score_corpus(REF1, [REF1])["bleu"] == pytest.approx(100.0)
    assert score_corpus(REF1, [REF1])["ter"] == 0.0
    with pytest.raises(NmtError, match="no hypotheses"):
        score_corpus([], [[]])
    with pytest.raises(NmtError, match="no reference stream"):
        score_corpus(HYPS, [])
    with pytest.raises(NmtError, match="stream 2 has 3 lines"):
        score_corpus(HYPS, [REF1, REF2[:3]])


def test_scores_fed_in_chunks_are_the_scores_of_the_whole_corpus() -> None:
    scores = CorpusScores(n_refs=2)
    for start, end in ((0, 1), (1, 1), (1, 3), (3, 4)):  # an empty chunk too
        scores.add(HYPS[start:end], [REF1[start:end], REF2[start:end]])
    results = scores.results()
    assert results["n_sentences"] == 4
    for key, corpus_score in (
        ("bleu", sacrebleu.corpus_bleu),
        ("chrf", sacrebleu.corpus_chrf),
        ("ter", sacrebleu.corpus_ter),
    ):
        assert results[key] == corpus_score(HYPS, [REF1, REF2]).score
        assert results["by_refs"]["single"][key] == corpus_score(HYPS, [REF1]).score
    assert results["bleu_details"]["precisions"] == sacrebleu.corpus_bleu(HYPS, [REF1, REF2]).precisions
    assert results["signatures"] == score_corpus(HYPS, [REF1, REF2])["signatures"]
    with pytest.raises(NmtError, match="stream 1 has 1 lines but there are 2 hypotheses"):
        scores.add(HYPS[:2], [REF1[:1], REF2[:2]])
    with pytest.raises(NmtError, match="no hypotheses"):
        CorpusScores(n_refs=1).results()


@pytest.mark.parametrize("metrics", [("bleu", "chrf"), ("ter",), ("chrf",)])
def test_a_chosen_subset_of_metrics_gives_the_same_numbers_and_no_others(metrics: tuple[str, ...]) -> None:
    full = score_corpus(HYPS, [REF1, REF2])
    some = score_corpus(HYPS, [REF1, REF2], metrics=metrics)
    with_bleu = ("bleu_details",) if "bleu" in metrics else ()
    expected = {"n_sentences", "n_refs", "signatures", "by_refs", *metrics, *with_bleu}
    assert set(some) == expected
    assert {key: some[key] for key in (*metrics, *with_bleu)} == {
        key: full[key] for key in (*metrics, *with_bleu)
    }
    assert some["signatures"] == {key: full["signatures"][key] for key in metrics}
    single = some["by_refs"]["single"]
    assert set(single) == {"signatures", *metrics, *with_bleu}
    assert all(single[key] == full["by_refs"]["single"][key] for key in metrics)


@pytest.mark.parametrize("metrics", [("bleu", "meteor"), ()])
def test_an_unknown_or_empty_choice_of_metrics_is_refused(metrics: tuple[str, ...]) -> None:
    with pytest.raises(NmtError, match=r"metrics=\[.*choose one or more of \['bleu', 'chrf', 'ter'\]"):
        CorpusScores(n_refs=1, metrics=metrics)


def test_table() -> None:
    results = score_corpus(HYPS, [REF1, REF2])
    table = format_table(results).splitlines()
    assert table[0].split() == ["metric", "refs", "score", "signature"]
    assert table[1].split()[:3] == ["BLEU", "2", f"{results['bleu']:.2f}"]
    assert table[4].split()[:4] == ["BLEU", "1", "(first)", f"{results['by_refs']['single']['bleu']:.2f}"]
    assert table[-1] == "4 sentences" and len(table) == 8
