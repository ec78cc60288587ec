import random

from nmt.tools.toy_corpus import synthetic_pair, write_synthetic_corpus


def test_synthetic_corpus_is_aligned_and_seeded(tmp_path):
    a = write_synthetic_corpus(tmp_path / "a", 100, seed=3)
    write_synthetic_corpus(tmp_path / "b", 100, seed=3)
    for split in ("train", "dev", "test"):
        for lang in ("en", "fr"):
            assert (tmp_path / "a" / f"{split}.{lang}").read_bytes() == (
                tmp_path / "b" / f"{split}.{lang}"
            ).read_bytes()
    en = (tmp_path / "a" / "train.en").read_text().splitlines()
    fr = (tmp_path / "a" / "train.fr").read_text().splitlines()
    assert len(en) == len(fr) == 100 and a.train == str(tmp_path / "a" / "train")
    src, tgt = synthetic_pair(random.Random(0))
    assert src.count(" and ") == tgt.count(" et ") and src.startswith("the ") and tgt.startswith("le ")
