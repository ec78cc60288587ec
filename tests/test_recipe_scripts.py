"""The three recipe scripts end to end, as a user runs them: ``train=smoke`` into a run directory under tmp_path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.recipes.config import ImageRowsConfig

pytestmark = pytest.mark.slow  # subprocesses and end-to-end runs: minutes, not seconds

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def test_sentiment_smoke_then_predict_from_the_saved_model(tmp_path):
    run = tmp_path / "sentiment"
    done = run_script("recipe_sentiment.py", "train=smoke", f"run_dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["kept"] == 12_808 and metrics["sizes"]["test"] == 200
    assert (run / "confusion.png").is_file() and (run / "recipe_sentiment.log").is_file()

    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    done = run_script(
        "recipe_sentiment.py", "predict", "a wonderful film", "dull, lifeless", f"run_dir={run}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("a wonderful film") and lines[1].endswith("dull, lifeless")
    assert all(line.split()[0] in ("positive", "negative") for line in lines)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # predicting leaves the run untouched


def test_sentiment_user_errors_are_one_line_without_traceback(tmp_path):
    done = run_script("recipe_sentiment.py", "predict", "good", f"run_dir={tmp_path / 'empty'}", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: ")
        and "train one first" in done.stderr
        and "Traceback" not in done.stderr
    )
    done = run_script("recipe_sentiment.py", "train.epochz=1", cwd=tmp_path)
    assert done.returncode != 0 and "epochz" in done.stderr and not (tmp_path / "runs").exists()


def test_image_rows_smoke(tmp_path):
    run = tmp_path / "image"
    done = run_script("recipe_image_rows.py", "train=smoke", f"run_dir={run}", cwd=tmp_path)
    if not Path(ImageRowsConfig().data.fashion_dir).is_dir():
        assert done.returncode == 2 and "apt-get install dataset-fashion-mnist" in done.stderr
        pytest.skip("dataset-fashion-mnist is not installed; checked the error message instead")
    assert done.returncode == 0, done.stderr
    assert "rows shuffled at test time" in done.stdout and "model trained on shuffled rows" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sizes"] == {"train": 2500, "dev": 500, "test": 1000}
    assert len(metrics["per_class"]) == 10 and (run / "samples.png").is_file()


def test_stock_smoke(tmp_path):
    run = tmp_path / "stock"
    done = run_script("recipe_stock.py", "train=smoke", f"run_dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["days"] == {"train": 1_033, "test": 443}
    assert set(metrics["test_rmse"]) == {"naive", "lstm-window", "lstm-full", "lstm-truncated"}
    assert 0.3 < metrics["test_rmse"]["naive"] < 1.0  # dollars: MSFT moved ~0.6 $ a day in 2016-2017
    assert "test RMSE naive" in done.stdout and (run / "forecast.png").is_file()
