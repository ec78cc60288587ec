"""Corpus metrics with sacrebleu: BLEU, chrF and TER, with the signatures that make scores comparable.

Hypotheses are one list of detokenized lines; references are one or more *streams*, each a list of lines
aligned with the hypotheses (``refs[k][i]`` is the k-th reference of line i), as sacrebleu takes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER

from nmt.errors import NmtError

METRICS = {"bleu": ("BLEU", BLEU), "chrf": ("chrF", CHRF), "ter": ("TER", TER)}  # key -> (label, class)


class CorpusScores:
    """BLEU, chrF and TER of a corpus given in chunks of aligned lines (:meth:`add`), so that a corpus of any
    size is scored with one chunk in memory.

    sacrebleu scores a corpus from per-sentence sufficient statistics (n-gram matches and totals, edits,
    reference lengths) summed over all sentences. Each chunk's statistics are added to running totals in line
    order, the very sums ``corpus_score`` forms, so the scores equal sacrebleu's ``corpus_score`` of all lines
    at once exactly. The two steps are methods every sacrebleu 2 metric has, ``_extract_corpus_statistics``
    and ``_compute_score_from_stats`` (``corpus_score`` is the two of them over one list); tests/test_metrics.py
    holds the result to ``corpus_score``.
    """

    def __init__(self, n_refs: int, metrics: Sequence[str] = tuple(METRICS)) -> None:
        if n_refs < 1:
            raise NmtError("no reference stream given to score against")
        unknown = [key for key in metrics if key not in METRICS]
        if unknown or not metrics:
            raise NmtError(f"metrics={list(metrics)}: choose one or more of {list(METRICS)}")
        self.n_refs = n_refs
        self.n_sentences = 0
        self._all = _RunningStats(metrics)  # against every stream
        self._first = _RunningStats(metrics) if n_refs > 1 else None  # against the first stream alone

    def add(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        """Score the next ``hyps`` against ``refs`` (one list of lines per reference stream, each aligned with
        ``hyps``)."""
        if len(refs) != self.n_refs:
            raise NmtError(
                f"{len(refs)} reference streams given, but the scores were started with {self.n_refs}"
            )
        for k, stream in enumerate(refs):
            if len(stream) != len(hyps):
                raise NmtError(
                    f"reference stream {k + 1} has {len(stream)} lines but there are {len(hyps)} hypotheses; "
                    "hypotheses and references must be line-aligned"
                )
        if not hyps:
            return
        self._all.add(hyps, refs)
        if self._first is not None:
            self._first.add(hyps, refs[:1])
        self.n_sentences += len(hyps)

    def results(self) -> dict[str, Any]:
        """The scores so far, as :func:`score_corpus` returns them."""
        if not self.n_sentences:
            raise NmtError("no hypotheses to score (empty input)")
        results: dict[str, Any] = {
            "n_sentences": self.n_sentences,
            "n_refs": self.n_refs,
            **self._all.scores(),
        }
        if self._first is not None:
            multi = {key: results[key] for key in results if key not in ("n_sentences", "n_refs")}
            results["by_refs"] = {"single": self._first.scores(), "multi": multi}
        return results


class _RunningStats:
    """Each metric's sufficient statistics summed over the lines added so far, against one set of streams."""

    def __init__(self, metrics: Sequence[str]) -> None:
        self.metrics = {key: METRICS[key][1]() for key in metrics}
        self.totals: dict[str, list[Any]] = {}

    def add(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        for key, metric in self.metrics.items():
            stats = metric._extract_corpus_statistics(hyps, refs)
            # the zero of the statistics' own type, as sacrebleu's sum starts from
            total = self.totals.setdefault(key, [type(stats[0][0])(0)] * len(stats[0]))
            for sentence in stats:
                for i, value in enumerate(sentence):
                    total[i] += value

    def scores(self) -> dict[str, Any]:
        """Each metric's score with its signature, and BLEU's details when BLEU is among them."""
        result: dict[str, Any] = {"signatures": {}}
        for key, metric in self.metrics.items():
            score = metric._compute_score_from_stats(self.totals[key])
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


def score_corpus(
    hyps: list[str], refs: list[list[str]], metrics: Sequence[str] = tuple(METRICS)
) -> dict[str, Any]:
    """Score detokenized hypotheses against reference streams; a JSON-ready dict.

    Keys: ``n_sentences``, ``n_refs``, ``bleu``, ``chrf``, ``ter`` (against all streams), ``bleu_details``
    (n-gram precisions, brevity penalty, lengths) and ``signatures``. With several streams, ``by_refs`` holds
    the same scores against the first stream alone (``single``) and against all of them (``multi``).
    ``metrics`` keeps only those keys of :data:`METRICS` (and BLEU's details with BLEU): TER takes ten times as
    long as BLEU and chrF together, so validation during training leaves it out.
    :class:`CorpusScores` gives the same for a corpus fed in chunks.
    """
    scores = CorpusScores(len(refs), metrics)
    scores.add(hyps, refs)
    return scores.results()


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
