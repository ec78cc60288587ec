import contextlib
import gzip
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nmt.config import BigCorpusConfig, Config, TextFormat, to_object
from nmt.data import prepare_data
from nmt.data.bible import default_db_path, hash_split
from nmt.errors import NmtError
from nmt.tools.big_corpus import LANGUAGE_VERSIONS, output_paths, write_big_corpus

REPO = Path(__file__).resolve().parents[1]
TRAIN_KEYS = 30_484  # verse keys of the hash split's train part (tests/test_data_bible.py)


@pytest.fixture(scope="module")
def db_texts() -> dict[tuple[str, str], str]:
    """``(version, "book.chapter.verse") -> text`` straight from the db, for the versions the tests use."""
    versions = ("4", "k", "3", "l", "o")
    with contextlib.closing(sqlite3.connect(default_db_path())) as con:
        rows = con.execute(
            f"SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible WHERE bbName IN ({','.join('?' * 5)})",
            versions,
        ).fetchall()
    return {(v, f"{b}.{c}.{n}"): text for v, b, c, n, text in rows}


def lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return f.read().split("\n")[:-1]


def key_split(verse_id: str) -> str:
    return hash_split(*(int(x) for x in verse_id.split(".")))


def make(tmp_path: Path, name: str, **fields) -> tuple[BigCorpusConfig, dict[str, Path]]:
    cfg = BigCorpusConfig(output=str(tmp_path / name / "train"), **fields)
    write_big_corpus(cfg)
    return cfg, output_paths(cfg)


@pytest.mark.slow
def test_moses_lines_are_n_aligned_by_verse_key_and_never_dev_or_test(tmp_path, db_texts):
    cfg, paths = make(
        tmp_path, "moses", pairs=5000, src_versions=["4", "k"], tgt_versions=["l", "o"], keys=True
    )
    assert sorted(p.name for p in paths.values()) == ["train.en", "train.fr", "train.keys"]
    src, tgt, keys = lines(paths["src"]), lines(paths["tgt"]), lines(paths["keys"])
    assert len(src) == len(tgt) == len(keys) == 5000
    for s, t, key in zip(src, tgt, keys):
        verse, sv, tv = key.split("\t")
        assert s == " ".join(db_texts[sv, verse].split()) and t == " ".join(db_texts[tv, verse].split())
    seen = Counter(key.split("\t")[0] for key in keys)
    assert {key_split(v) for v in seen} == {"train"}
    assert {tuple(k.split("\t")[1:]) for k in keys} == {("4", "l"), ("4", "o"), ("k", "l"), ("k", "o")}


def test_one_pass_writes_every_pair_once_then_repeats_in_a_fresh_order(tmp_path):
    _, paths = make(
        tmp_path, "passes", pairs=2 * TRAIN_KEYS + 7, src_versions=["4"], tgt_versions=["l"], keys=True
    )
    keys = lines(paths["keys"])
    assert len(keys) == 2 * TRAIN_KEYS + 7
    first, second = keys[:TRAIN_KEYS], keys[TRAIN_KEYS : 2 * TRAIN_KEYS]
    assert len(set(first)) == TRAIN_KEYS and set(second) == set(first)  # 4 and l have text for every verse
    assert first != second  # each pass is shuffled anew
    assert first != sorted(first, key=lambda k: tuple(int(x) for x in k.split("\t")[0].split(".")))


def test_include_heldout_adds_exactly_the_dev_and_test_keys(tmp_path):
    _, paths = make(
        tmp_path, "all", pairs=31_102, src_versions=["4"], tgt_versions=["l"], keys=True, include_heldout=True
    )
    splits = Counter(key_split(k.split("\t")[0]) for k in lines(paths["keys"]))
    assert splits == {"train": TRAIN_KEYS, "dev": 311, "test": 307}


def test_empty_verses_are_skipped_and_counted(tmp_path, db_texts):
    cfg = BigCorpusConfig(
        output=str(tmp_path / "empty" / "train"), pairs=TRAIN_KEYS, src_versions=["3"], tgt_versions=["l"]
    )
    report = write_big_corpus(cfg)
    placeholders = {
        verse
        for (version, verse), text in db_texts.items()
        if version == "3" and key_split(verse) == "train" and not any(ch.isalnum() for ch in text)
    }
    assert len(placeholders) > 10  # "[]" where Basic English leaves a verse out
    assert report.empty == {"3": len(placeholders), "l": 0}
    assert report.distinct_pairs == TRAIN_KEYS - len(placeholders)
    src = lines(output_paths(cfg)["src"])
    assert len(src) == TRAIN_KEYS and all(any(ch.isalnum() for ch in line) for line in src)


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_order(tmp_path):
    common = dict(pairs=3000, src_versions=["4"], tgt_versions=["l"])
    _, a = make(tmp_path, "a", seed=7, **common)
    _, b = make(tmp_path, "b", seed=7, **common)
    _, c = make(tmp_path, "c", seed=8, **common)
    assert a["src"].read_bytes() == b["src"].read_bytes() and a["tgt"].read_bytes() == b["tgt"].read_bytes()
    assert a["src"].read_bytes() != c["src"].read_bytes()


@pytest.mark.slow
def test_gzip_and_tsv_hold_the_same_pairs_as_plain_moses(tmp_path):
    common = dict(pairs=4000, seed=3, tgt_versions=["l", "o"])
    _, plain = make(tmp_path, "plain", **common)
    _, gz = make(tmp_path, "gz", gzip=True, **common)
    _, gz_again = make(tmp_path, "gz_again", gzip=True, **common)
    _, tsv = make(tmp_path, "tsv", format=TextFormat.tsv, gzip=True, **common)
    assert gz["src"].name == "train.en.gz" and tsv["tsv"].name == "train.tsv.gz"
    assert gzip.decompress(gz["src"].read_bytes()) == plain["src"].read_bytes()
    assert gzip.decompress(gz["tgt"].read_bytes()) == plain["tgt"].read_bytes()
    assert gz["src"].read_bytes() == gz_again["src"].read_bytes()  # no time stamp in the gzip header
    rows = [line.split("\t") for line in lines(tsv["tsv"])]
    assert [r[0] for r in rows] == lines(plain["src"]) and [r[1] for r in rows] == lines(plain["tgt"])
    assert {len(r) for r in rows} == {2}


def test_languages_pick_their_versions_and_mistakes_are_named():
    assert sum(len(v) for v in LANGUAGE_VERSIONS.values()) == 31
    with contextlib.closing(sqlite3.connect(default_db_path())) as con:
        codes = {r[0] for r in con.execute("SELECT DISTINCT bbName FROM bible")}
    assert {c for v in LANGUAGE_VERSIONS.values() for c in v} == codes
    cases = [
        (dict(src_lang="xx"), "src_lang='xx'"),
        (dict(tgt_versions=["q"]), "unknown Bible version(s) ['q']"),
        (dict(src_versions=["4"], tgt_versions=["4"]), "both source and target"),
        (dict(tgt_lang="en"), "would collide"),
        (dict(pairs=0), "pairs=0"),
        (dict(gzip=True, gzip_level=0), "gzip_level=0"),
    ]
    for fields, message in cases:
        with pytest.raises(NmtError, match=re.escape(message)):
            write_big_corpus(replace(BigCorpusConfig(output="/nonexistent/never/written"), **fields))


@pytest.mark.slow
def test_script_writes_the_corpus_and_prepare_data_reads_it(tmp_path):
    prefix = tmp_path / "corpus" / "train"
    command = [sys.executable, "scripts/make_big_corpus.py", "pairs=3000", f"output={prefix}", "gzip=true"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3000 pairs" in result.stdout and "618 dev/test verse keys left out" in result.stdout
    cfg = to_object(
        OmegaConf.from_dotlist(
            [
                "data.source=text",
                f"data.text.train={prefix}",
                f"data.cache_dir={tmp_path / 'cache'}",
                "tokenizer.vocab_size=400",
            ]
        ),
        Config,
    )
    summary = prepare_data(cfg, tmp_path / "run").summary
    train = summary["splits"]["train"]
    assert train["pairs"] + sum(train["dropped"].values()) == 3000 and train["pairs"] > 2900
