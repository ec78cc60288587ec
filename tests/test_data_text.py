import gzip
import os

import pytest
from omegaconf import OmegaConf

from nmt.config import Config, DataConfig, to_object
from nmt.data.corpus import corpus_cache, load_corpus
from nmt.errors import NmtError


def data_config(tmp_path, **text) -> DataConfig:
    dots = [f"data.text.{k}={v}" for k, v in text.items()]
    dots += ["data.source=text", f"data.cache_dir={tmp_path / 'cache'}"]
    return to_object(OmegaConf.from_dotlist(dots), Config).data


def write(path, lines, *, raw: bytes | None = None):
    data = raw if raw is not None else "".join(f"{line}\n" for line in lines).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


EN = ["Hello world.", "How are you?", "Good  night.", ""]
FR = ["Bonjour le monde.", "Comment allez-vous ?", "Bonne nuit.", "Vide"]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_moses_pair_files(tmp_path, suffix):
    write(tmp_path / f"train.en{suffix}", EN)
    write(tmp_path / f"train.fr{suffix}", FR)
    write(tmp_path / f"dev.en{suffix}", ["One."])
    write(tmp_path / f"dev.fr{suffix}", ["Un."])
    corpus, report = load_corpus(data_config(tmp_path, train=tmp_path / "train", dev=tmp_path / "dev"))
    train = corpus["train"]
    assert train["id"] == ["1", "2", "3"] and train["refs"] == [[], [], []]
    assert train["src"] == ["Hello world.", "How are you?", "Good night."]
    assert train["tgt"] == FR[:3]
    assert report["train"]["dropped"]["empty"] == 1 and report["train"]["kept"] == 3
    assert corpus["dev"]["tgt"] == ["Un."] and len(corpus["test"]) == 0


def test_tsv_with_references_bom_crlf_and_blank_lines(tmp_path):
    raw = "\ufeffA cat.\tUn chat.\tUn matou.\r\n\r\nA dog.\tUn chien.\r\n".encode()
    path = write(tmp_path / "train.tsv.gz", [], raw=raw)
    corpus, report = load_corpus(data_config(tmp_path, format="tsv", train=path))
    assert corpus["train"][:] == {
        "id": ["1", "3"],
        "src": ["A cat.", "A dog."],
        "tgt": ["Un chat.", "Un chien."],
        "refs": [["Un matou."], []],
    }
    assert report["train"]["dropped"]["empty"] == 1


def test_second_load_is_a_cache_hit_and_edits_invalidate_it(tmp_path):
    path = write(tmp_path / "t.tsv", ["a\tb", "c\td"])
    cfg = data_config(tmp_path, format="tsv", train=path)
    first = corpus_cache(cfg)
    load_corpus(cfg)
    assert (first / "meta.json").is_file() and corpus_cache(cfg) == first
    write(path, ["a\tb", "c\td", "e\tf"])
    os.utime(path, ns=(1, 1))
    assert corpus_cache(cfg) != first
    assert len(load_corpus(cfg)[0]["train"]) == 3


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path):
    src = write(tmp_path / "c.en", ["a", "b", "c"])
    tgt = write(tmp_path / "c.fr", ["x", "y"])
    with pytest.raises(NmtError) as info:
        load_corpus(data_config(tmp_path, train=tmp_path / "c"))
    msg = str(info.value)
    assert f"{src} has 3 lines" in msg and f"{tgt} has 2" in msg
    assert not list((tmp_path / "cache").glob("corpus/*")), "no cache entry for a failed build"


def test_invalid_utf8_names_file_and_line(tmp_path):
    write(tmp_path / "c.en", [], raw=b"ok\nfine\nbad \xe9t\xe9\n")
    write(tmp_path / "c.fr", ["a", "b", "c"])
    with pytest.raises(NmtError, match=rf"{tmp_path / 'c.en'}:3: invalid UTF-8"):
        load_corpus(data_config(tmp_path, train=tmp_path / "c"))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"abc\x00\x01\x02\n", ":1: NUL byte"), (None, "file not found")],
)
def test_unusable_files_are_named(tmp_path, content, message):
    path = tmp_path / "c.en"
    if content is not None:
        path.write_bytes(content)
    write(tmp_path / "c.fr", ["a"])
    with pytest.raises(NmtError, match=message) as info:
        load_corpus(data_config(tmp_path, train=tmp_path / "c"))
    assert str(path) in str(info.value)


def test_bad_gzip_and_directory_are_named(tmp_path):
    write(tmp_path / "c.en", ["a"])
    (tmp_path / "c.fr.gz").write_bytes(b"this is not gzip data\n")
    with pytest.raises(NmtError, match="c.fr.gz: cannot read"):
        load_corpus(data_config(tmp_path, train=tmp_path / "c"))
    (tmp_path / "d.tsv").mkdir()
    with pytest.raises(NmtError, match="d.tsv: not a regular file"):
        load_corpus(data_config(tmp_path, format="tsv", train=tmp_path / "d.tsv"))


def test_tsv_line_without_tab_names_file_and_line(tmp_path):
    path = write(tmp_path / "t.tsv", ["a\tb", "just one field"])
    with pytest.raises(NmtError, match=rf"{path}:2: expected src<TAB>tgt"):
        load_corpus(data_config(tmp_path, format="tsv", train=path))


def test_train_is_required(tmp_path):
    with pytest.raises(NmtError, match="data.text.train"):
        load_corpus(data_config(tmp_path))
