import datasets

from nmt.config import CleanConfig
from nmt.data.clean import REASONS, clean_corpus
from nmt.data.features import CORPUS_FEATURES


def split(pairs: list[tuple[str, str]]) -> datasets.Dataset:
    rows = {
        "id": [str(i) for i in range(len(pairs))],
        "src": [s for s, _ in pairs],
        "tgt": [t for _, t in pairs],
        "refs": [[t.upper()] for _, t in pairs],
    }
    return datasets.Dataset.from_dict(rows, features=CORPUS_FEATURES)


LONG = " ".join(["w"] * 12)
TRAIN = [
    ("a b", "x y"),  # kept
    ("  ", "x"),  # empty (whitespace only)
    ("a", ""),  # empty
    (LONG, LONG),  # too_long (12 words > 10)
    ("a", "x y z w"),  # ratio 4 > 3
    ("a b", "x y"),  # duplicate of the first
    ("a  b\t", " x\u00a0y"),  # duplicate once normalised
    ("cafe\u0301 noir", "black coffee"),  # kept, NFC
    ("a b c", "x"),  # ratio exactly 3: kept
]


def test_exact_counts_per_reason(tmp_path):
    cfg = CleanConfig(max_words=10, max_ratio=3.0, dedupe=True)
    corpus = datasets.DatasetDict({"train": split(TRAIN), "dev": split([("x", ""), (LONG, "y")])})
    cleaned, report = clean_corpus(corpus, cfg, tmp_path)
    assert report["train"] == {"kept": 3, "dropped": {"empty": 2, "too_long": 1, "ratio": 1, "duplicate": 2}}
    assert cleaned["train"]["id"] == ["0", "7", "8"]
    assert cleaned["train"]["src"] == ["a b", "café noir", "a b c"]
    assert cleaned["train"]["refs"] == [["X Y"], ["BLACK COFFEE"], ["X"]]
    # dev/test: normalised, empties dropped, but never filtered by length or ratio
    assert report["dev"] == {"kept": 1, "dropped": {"empty": 1, "too_long": 0, "ratio": 0, "duplicate": 0}}
    assert cleaned["dev"]["src"] == [LONG]


def test_filters_can_be_switched_off(tmp_path):
    cfg = CleanConfig(max_words=0, max_ratio=0, dedupe=False, nfc=False)
    cleaned, report = clean_corpus(datasets.DatasetDict({"train": split(TRAIN)}), cfg, tmp_path)
    assert report["train"]["kept"] == 7 and report["train"]["dropped"]["empty"] == 2
    assert set(report["train"]["dropped"]) == set(REASONS)
    assert "cafe\u0301 noir" in cleaned["train"]["src"]


def test_empty_split_is_fine(tmp_path):
    cleaned, report = clean_corpus(
        datasets.DatasetDict({"test": split([])}), CleanConfig(dedupe=True), tmp_path
    )
    assert len(cleaned["test"]) == 0 and report["test"]["kept"] == 0
