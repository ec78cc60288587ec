"""The study report over real runs: a Hydra multirun of scripts/train.py with the `budget` study preset, then
scripts/study_report.py, and a decoding sweep's JSON files."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import digit_cli_overrides, write_digit_corpus

from nmt.errors import NmtError
from nmt.tools.study import collect_decoding, collect_training, report

pytestmark = pytest.mark.slow  # subprocesses and end-to-end runs: minutes, not seconds

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """Two variants of a tiny digit model trained by one `-m +study=budget` command (two joblib workers)."""
    root = tmp_path_factory.mktemp("study")
    corpus = write_digit_corpus(root / "corpus")
    command = [
        sys.executable,
        "scripts/train.py",
        "-m",
        "+study=budget",
        "+variant=base,lstm",  # instead of every variant (the preset sweeps glob(*))
        f"hydra.sweep.dir={root / 'sweep'}",
        *digit_cli_overrides(corpus, root / "cache"),
        "train.max_steps=8",
        "train.validate_every=4",
        "device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweep"


def test_multirun_study_writes_one_run_per_variant(sweep_dir):
    rows = collect_training(sweep_dir)
    assert sorted(r["run"] for r in rows) == ["base", "lstm"]
    by_run = {r["run"]: r for r in rows}
    assert (by_run["base"]["rnn"], by_run["lstm"]["rnn"]) == ("gru", "lstm")
    assert by_run["lstm"]["parameters"] > by_run["base"]["parameters"]
    for row in rows:
        assert row["updates"] == 8 and row["max_tokens"] == 200 and row["vocab"].startswith("joint ")
        # validations at updates 4 and 8, each with the training clock at that moment
        assert len(row["_curve"]) == 2 and 0 < row["_curve"][0][0] < row["_curve"][1][0]
        assert row["best_dev_bleu"] == round(max(b for _, b in row["_curve"]), 2)
    assert [r["best_dev_bleu"] for r in rows] == sorted((r["best_dev_bleu"] for r in rows), reverse=True)


def test_report_script_writes_csv_and_plot(sweep_dir, tmp_path):
    decode = tmp_path / "decode"
    decode.mkdir()
    for beam, alpha, bleu in [(1, 0.0, 20.0), (5, 0.6, 25.5)]:
        result = {"bleu": bleu, "chrf": 50.0, "sentences_per_second": 10.0}
        result["search"] = {"beam_size": beam, "alpha": alpha, "length_norm": "gnmt"}
        (decode / f"b{beam}.json").write_text(json.dumps(result))
    (decode / "scores.json").write_text(json.dumps({"bleu": 1.0}))  # a scored file, not a model run: ignored
    command = [sys.executable, "scripts/study_report.py", f"sweep_dir={sweep_dir}", f"decode_dir={decode}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep_dir / "study.csv", encoding="utf-8") as handle:
        assert sorted(r["run"] for r in csv.DictReader(handle)) == ["base", "lstm"]
    assert (sweep_dir / "bleu_vs_time.png").stat().st_size > 1000
    with open(decode / "decoding.csv", encoding="utf-8") as handle:
        assert [(r["beam_size"], r["bleu"]) for r in csv.DictReader(handle)] == [("5", "25.5"), ("1", "20.0")]
    assert "| base |" in result.stdout or "| lstm |" in result.stdout


def test_unfinished_runs_are_skipped_and_empty_sweeps_fail(sweep_dir, tmp_path, capsys):
    unfinished = tmp_path / "sweep" / "crashed"
    unfinished.parent.mkdir()
    (unfinished).mkdir()
    (unfinished / "config.yaml").write_text((sweep_dir / "base" / "config.yaml").read_text())
    with pytest.raises(NmtError, match="no finished training runs"):
        collect_training(tmp_path / "sweep")
    assert "skipped 1 unfinished run(s): crashed" in capsys.readouterr().out
    with pytest.raises(NmtError, match="not a directory"):
        report(tmp_path / "missing")
    with pytest.raises(NmtError, match="no evaluation JSON"):
        collect_decoding(tmp_path)
