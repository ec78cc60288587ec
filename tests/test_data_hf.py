import os
import subprocess
import sys
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from omegaconf import OmegaConf

from nmt.config import Config, DataConfig, to_object
from nmt.data.corpus import load_corpus
from nmt.errors import NmtError

REPO = Path(__file__).resolve().parents[1]


def data_config(tmp_path, *dots: str) -> DataConfig:
    dots = ["data.source=hf", f"data.cache_dir={tmp_path / 'cache'}", *dots]
    return to_object(OmegaConf.from_dotlist(dots), Config).data


def pairs(*items: tuple[str, str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"translation": [{"en": en, "fr": fr} for en, fr in items]})


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": pairs(("A cat.", "Un chat."), ("", "Vide."), ("A  dog.", "Un chien.")),
            "validation": pairs(("One.", "Un.")),
        }
    ).save_to_disk(str(path))
    return path


def test_local_save_to_disk_directory(tmp_path, saved):
    before = sorted(p.relative_to(saved) for p in saved.rglob("*"))
    corpus, report = load_corpus(data_config(tmp_path, f"data.hf.name={saved}"))
    assert corpus["train"][:] == {
        "id": ["0", "2"],
        "src": ["A cat.", "A dog."],
        "tgt": ["Un chat.", "Un chien."],
        "refs": [[], []],
    }
    assert report["train"]["dropped"]["empty"] == 1
    assert corpus["dev"]["tgt"] == ["Un."] and len(corpus["test"]) == 0  # no test split: empty
    assert sorted(p.relative_to(saved) for p in saved.rglob("*")) == before  # nothing written there


def test_swapped_direction_and_flat_fields(tmp_path):
    path = tmp_path / "flat"
    flat = datasets.Dataset.from_dict(
        {"id": [7, 9], "de": ["Hallo", "Welt"], "meta": [{"en": "Hello"}, {"en": "World"}]}
    )
    datasets.DatasetDict({"train": flat}).save_to_disk(str(path))
    dots = [f"data.hf.name={path}", "data.hf.src_field=de", "data.hf.tgt_field=meta.en"]
    corpus, _ = load_corpus(data_config(tmp_path, *dots))
    assert corpus["train"]["id"] == ["7", "9"] and corpus["train"]["tgt"] == ["Hello", "World"]


def test_missing_field_lists_the_columns(tmp_path, saved):
    with pytest.raises(NmtError, match=r"field 'translation.de' \(data.hf.tgt_field\)") as info:
        load_corpus(data_config(tmp_path, f"data.hf.name={saved}", "data.tgt_lang=de"))
    assert "translation" in str(info.value) and "'en', 'fr'" in str(info.value)


def test_missing_directory_and_missing_train_split(tmp_path, saved):
    with pytest.raises(NmtError, match="directory not found"):
        load_corpus(data_config(tmp_path, f"data.hf.name={tmp_path / 'nope'}"))
    with pytest.raises(NmtError, match="no split 'training'"):
        load_corpus(data_config(tmp_path, f"data.hf.name={saved}", "data.hf.train_split=training"))


def test_unreachable_hub_fails_fast_naming_offline_sources(tmp_path, monkeypatch, unreachable_hub):
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", False
    )  # read from the environment at import
    with pytest.raises(NmtError, match="cannot reach 127.0.0.1:9") as info:
        load_corpus(data_config(tmp_path, "data.hf.name=someone/some-corpus"))
    assert all(word in str(info.value) for word in ("data.source=bible", "data.source=text", "save_to_disk"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_offline_mode_hub_name_fails_quickly_from_the_script(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf")}
    args = [
        sys.executable,
        str(REPO / "scripts" / "prepare_data.py"),
        "data=hf",
        "data.hf.name=nonexistent-user/nonexistent-corpus",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 2, proc.stderr
    assert "nonexistent-user/nonexistent-corpus" in proc.stderr and "data.source=bible" in proc.stderr
    assert "Traceback" not in proc.stderr
