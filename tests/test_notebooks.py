"""The notebooks are stored without outputs and run top to bottom with their tiny default parameters."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # subprocesses and end-to-end runs: minutes, not seconds

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["rnn_basics", "recipe_sentiment", "recipe_image_rows", "recipe_stock"]
EXPECTED = {  # a line each notebook must print when it runs
    "rnn_basics": "RNN on runs of length 2-5: 100%",
    "recipe_sentiment": "test accuracy",
    "recipe_image_rows": "model trained on shuffled rows",
    "recipe_stock": "test RMSE naive",
}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean_and_runs(name, tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), (
        "commit notebooks with outputs cleared"
    )
    assert "parameters" in code[0].metadata.get("tags", []) and "SMOKE = True" in code[0].source

    if name == "recipe_image_rows" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    printed = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert EXPECTED[name] in printed
    assert (tmp_path / "runs" / f"notebook-{name.removeprefix('recipe_')}").is_dir()


def test_attention_notebook_runs_on_a_trained_model(digit_model_dir, tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "attention_alignments.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    code[
        0
    ].source = f'MODEL_DIR = "{digit_model_dir}"\nSENTENCES = ["one two three", "four five"]\nBEAM_SIZE = 3'
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(out.get("text", "") for c in code for out in c.outputs)
    images = [out for c in code for out in c.outputs if "image/png" in out.get("data", {})]
    assert "one two three\n  -> un deux trois" in printed
    assert len(images) == 4  # two sentences, subword and word level
    assert "row sums [1.0, 1.0" in printed
