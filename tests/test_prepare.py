import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import WORDS_EN, WORDS_FR
from omegaconf import OmegaConf

from nmt.config import Config, to_object
from nmt.data import format_summary, prepare_data
from nmt.data.prepare import _Encode
from nmt.errors import NmtError
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID

REPO = Path(__file__).resolve().parents[1]
EN, FR = WORDS_EN, WORDS_FR


def write_corpus(root: Path) -> Path:
    rng = random.Random(0)
    for split, n in (("train", 240), ("dev", 20), ("test", 20)):
        lengths = [rng.randint(2, 12) for _ in range(n)]
        if split == "train":
            lengths[:4] = [40, 40, 40, 40]  # over max_len once tokenized
        for lang, words in (("en", EN), ("fr", FR)):
            lines = [" ".join(rng.choice(words) for _ in range(k)) for k in lengths]
            (root / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def config(tmp_path: Path, *dots: str) -> Config:
    corpus = write_corpus(tmp_path) if not (tmp_path / "train.en").exists() else tmp_path
    base = [
        "data.source=text",
        f"data.text.train={corpus / 'train'}",
        f"data.text.dev={corpus / 'dev'}",
        f"data.text.test={corpus / 'test'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_len=30",
        "tokenizer.vocab_size=60",
    ]
    return to_object(OmegaConf.from_dotlist([*base, *dots]), Config)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    return prepare_data(config(root), root / "run"), root


def test_tokenized_columns_and_lengths(prepared):
    data, _ = prepared
    train = data.splits["train"]
    assert set(train.column_names) == {"id", "src", "tgt", "refs", "src_ids", "tgt_ids", "src_len", "tgt_len"}
    row = train[0]
    assert row["src_len"] == len(row["src_ids"]) and row["tgt_len"] == len(row["tgt_ids"])
    assert not {PAD_ID, BOS_ID, EOS_ID} & set(row["src_ids"] + row["tgt_ids"])
    assert data.tokenizer.decode_tgt(row["tgt_ids"]) == row["tgt"]
    src_len, tgt_len = data.lengths("train")
    assert src_len.max() <= 30 and tgt_len.max() <= 30 and len(src_len) == len(train)


def test_summary_counts_and_files(prepared):
    data, root = prepared
    summary = json.loads((root / "run" / "summary.json").read_text())
    assert summary == data.summary
    train = summary["splits"]["train"]
    assert train["dropped"]["max_len"] == 4 and train["pairs"] == 236
    assert summary["splits"]["dev"]["pairs"] == 20 and summary["splits"]["dev"]["dropped"]["max_len"] == 0
    src_len, _ = data.lengths("dev")
    assert summary["splits"]["dev"]["src_tokens"] == int(src_len.sum())
    assert not summary["tokenized"]["cache_hit"] and not summary["tokenizer"]["reused"]
    assert (root / "run" / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        summary["tokenizer"]["files"] == ["spm.src.model", "spm.tgt.model"]
        and summary["tokenizer"]["trimmed"]
    )
    table = format_summary(summary)
    assert "train" in table and "236" in table and "drop max_len" in table


def test_second_call_is_a_cache_hit(prepared):
    data, root = prepared
    again = prepare_data(config(root), root / "run")
    assert again.summary["corpus"]["cache_hit"] and again.summary["tokenized"]["cache_hit"]
    assert again.summary["tokenizer"]["reused"]
    assert again.splits["train"]["tgt_ids"] == data.splits["train"]["tgt_ids"]
    assert again.summary["splits"] == data.summary["splits"]


def test_changed_tokenizer_settings_in_the_same_run_dir_are_refused(prepared):
    _, root = prepared
    with pytest.raises(NmtError, match="use a new run_dir"):
        prepare_data(config(root, "tokenizer.vocab_size=80"), root / "run")


def test_encode_function_survives_pickling_for_worker_processes(prepared):
    data, root = prepared
    encode = pickle.loads(pickle.dumps(_Encode(root / "run")))
    out = encode({"src": ["the old man"], "tgt": ["le vieux homme"]})
    assert out["tgt_ids"] == data.tokenizer.encode_tgt(["le vieux homme"]) and out["src_len"] == [
        len(out["src_ids"][0])
    ]


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_script_prints_the_summary_table(tmp_path):
    cfg = config(tmp_path)
    proc = run_script(
        "data=text",
        f"data.text.train={cfg.data.text.train}",
        f"data.text.dev={cfg.data.text.dev}",
        f"data.cache_dir={cfg.data.cache_dir}",
        "tokenizer.vocab_size=60",
        f"run_dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "split" in proc.stdout and "src tokens" in proc.stdout and "train" in proc.stdout
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.slow
def test_script_typo_override_fails_clearly(tmp_path):
    proc = run_script("data.sourc=x", f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}")
    assert proc.returncode != 0
    assert "sourc" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists()
