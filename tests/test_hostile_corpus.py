"""Hostile parallel corpora: every bad input is a clear NmtError naming the file (and line), or a counted drop."""

import builtins
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpus import digit_config
from omegaconf import OmegaConf

from nmt import lines as lines_module
from nmt.config import Config, DataConfig, to_object
from nmt.data.corpus import load_corpus
from nmt.data.prepare import prepare_data
from nmt.errors import NmtError
from nmt.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
# A real 1x1 PNG (signature, IHDR, IDAT, IEND).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def data_config(root: Path, **text) -> DataConfig:
    dots = [f"data.text.{k}={v}" for k, v in text.items()]
    dots += ["data.source=text", f"data.cache_dir={root / 'cache'}"]
    return to_object(OmegaConf.from_dotlist(dots), Config).data


def moses(root: Path, src: bytes, tgt: bytes) -> DataConfig:
    (root / "c.en").write_bytes(src)
    (root / "c.fr").write_bytes(tgt)
    return data_config(root, train=root / "c")


def assert_all_counted(report: dict, n_lines: int) -> None:
    assert report["kept"] + sum(report["dropped"].values()) == n_lines


# ------------------------------------------------------------------------------------ clear errors
@pytest.mark.parametrize(
    ("src", "message"),
    [
        pytest.param(b"ok\ncaf\xe9\n", ":2: invalid UTF-8 at byte 3", id="invalid-utf8"),
        pytest.param(b"ok\na\xed\xa0\x80b\n", ":2: invalid UTF-8", id="utf8-encoded-surrogate"),
        pytest.param(b"ok\nnul\x00here\n", ":2: NUL byte", id="nul-byte"),
        pytest.param(PNG, ":1: invalid UTF-8 at byte 0", id="png-image"),
        pytest.param(b"", "empty file", id="empty-file"),
        pytest.param(gzip.compress(b"a\nb\n"), "c.en:1: ", id="gzip-without-gz-suffix"),
    ],
)
def test_unusable_source_file_names_file_and_line(tmp_path, src, message):
    cfg = moses(tmp_path, src, b"x\ny\n")
    with pytest.raises(NmtError, match=message) as info:
        load_corpus(cfg)
    assert str(tmp_path / "c.en") in str(info.value)


def test_random_bytes_are_refused_not_decoded(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(5):
        data = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
        root = tmp_path / str(trial)
        root.mkdir()
        cfg = moses(root, data, b"x\n" * (data.count(b"\n") + 1))
        with pytest.raises(NmtError, match=r"c\.en:\d+: (invalid UTF-8|NUL byte)"):
            load_corpus(cfg)


def test_mismatched_line_counts_and_lone_cr_line_ends(tmp_path):
    cfg = moses(tmp_path, b"a\nb\nc\n", b"x\ny\n")
    with pytest.raises(NmtError, match=r"c\.en has 3 lines but .*c\.fr has 2"):
        load_corpus(cfg)
    # Classic Mac line ends are not line ends: the file is one line, and the counts say so.
    cfg = moses(tmp_path, b"a\rb\rc\r", b"x\ny\nz\n")
    with pytest.raises(NmtError, match=r"c\.en has 1 lines but .*c\.fr has 3"):
        load_corpus(cfg)


def test_unreadable_paths_are_named(tmp_path, monkeypatch):
    (tmp_path / "dir.en").mkdir()
    (tmp_path / "dir.fr").write_text("x\n")
    with pytest.raises(NmtError, match=f"{tmp_path / 'dir.en'}: not a regular file"):
        load_corpus(data_config(tmp_path, train=tmp_path / "dir"))
    (tmp_path / "plain").write_text("a file, not a directory\n")
    with pytest.raises(NmtError, match=f"{tmp_path / 'plain' / 'c.en'}: file not found"):
        load_corpus(data_config(tmp_path, train=tmp_path / "plain" / "c"))
    # chmod 000 does not stop root: make opening the file fail as it would for a user without permission.
    cfg = moses(tmp_path, b"a\n", b"x\n")
    real_open = builtins.open

    def open_denied(path, *args, **kwargs):
        if str(path).endswith("c.fr"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(lines_module, "open", open_denied, raising=False)
    with pytest.raises(NmtError, match=rf"{tmp_path / 'c.fr'}: cannot read \(.*Permission denied"):
        load_corpus(cfg)


def test_truncated_gzip_is_named(tmp_path):
    data = gzip.compress(np.random.default_rng(1).integers(97, 123, 20000, dtype=np.uint8).tobytes())
    (tmp_path / "c.en.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "c.fr").write_text("x\n")
    with pytest.raises(NmtError, match=r"c\.en\.gz: cannot read \(Compressed file ended"):
        load_corpus(data_config(tmp_path, train=tmp_path / "c"))


# ------------------------------------------------------------------------------- accepted, or counted
def test_bom_crlf_and_mid_file_bom_are_removed(tmp_path):
    src = b"\xef\xbb\xbfhello\r\nworld\r\n\xef\xbb\xbfagain\r\n"  # the last BOM: two files concatenated
    cfg = moses(tmp_path, src, b"bonjour\r\nmonde\r\nencore\r\n")
    corpus, report = load_corpus(cfg)
    assert corpus["train"]["src"] == ["hello", "world", "again"]
    assert corpus["train"]["tgt"] == ["bonjour", "monde", "encore"]
    assert report["train"]["kept"] == 3


def test_unicode_line_separators_inside_a_line_keep_pairs_aligned(tmp_path):
    src = "a\u2028b\nc\x85d\x0be\x0cf\x1cg\nh\u2029i\n".encode()
    cfg = moses(tmp_path, src, b"x y\nz z z z z z\nw w\n")
    corpus, report = load_corpus(cfg)
    assert corpus["train"]["src"] == ["a b", "c d e f g", "h i"]
    assert corpus["train"]["id"] == ["1", "2", "3"]
    assert_all_counted(report["train"], 3)


def test_empty_whitespace_and_invisible_lines_are_dropped_and_counted(tmp_path):
    src_lines = ["", "   ", "\t\u00a0\u3000", "\x01\x02", "\u200b\ufeff", "real", "ok", "\u2028"]
    tgt_lines = ["x", "y", "z", "w", "v", "vrai", "", "u"]
    src = "".join(line + "\n" for line in src_lines).encode()
    tgt = "".join(line + "\n" for line in tgt_lines).encode()
    corpus, report = load_corpus(moses(tmp_path, src, tgt))
    assert corpus["train"]["src"] == ["real"] and corpus["train"]["id"] == ["6"]
    assert report["train"]["dropped"]["empty"] == 7
    assert_all_counted(report["train"], 8)


def test_control_characters_inside_text_are_kept(tmp_path):
    corpus, _ = load_corpus(moses(tmp_path, b"a\x01b c\x1bd\n", b"x\n"))
    assert corpus["train"]["src"] == ["a\x01b c\x1bd"]


@pytest.mark.slow
def test_a_100k_character_line_is_dropped_and_counted(tmp_path):
    words = ("word " * 20_000).encode()  # 100k characters, 20k words: over clean.max_words
    glued = b"w" * 100_000  # one 100k-character "word": passes cleaning, then over data.max_len tokens
    cfg = digit_config(tmp_path)
    corpus_dir = Path(cfg.data.text.train).parent
    for lang, extra in (("en", [words, glued]), ("fr", [b"mot", b"m" * 100_000])):
        path = corpus_dir / f"train.{lang}"
        path.write_bytes(path.read_bytes() + b"\n".join(extra) + b"\n")
    prepared = prepare_data(cfg, Path(cfg.run_dir))
    train_summary = prepared.summary["splits"]["train"]
    assert train_summary["dropped"]["too_long"] == 1 and train_summary["dropped"]["max_len"] == 1
    assert train_summary["pairs"] == 240 and max(prepared.splits["train"]["src_len"]) <= cfg.data.max_len


@pytest.mark.slow
def test_a_100k_token_dev_line_does_not_stall_validation(tmp_path):
    cfg = digit_config(tmp_path, max_steps=2, validate_every=2)
    corpus_dir = Path(cfg.data.text.dev).parent
    for lang in ("en", "fr"):
        path = corpus_dir / f"dev.{lang}"
        path.write_text(path.read_text() + " ".join(["one"] * 25_000) + "\n")  # 100k characters
    metrics = train(cfg)
    assert [v["step"] for v in metrics["validations"]] == [2]
    summary = json.loads((Path(cfg.run_dir) / "summary.json").read_text())
    # kept in full (dev is never filtered); validation cuts it to search.max_src_len instead of decoding
    # 1.5x its length while attending over all of it
    assert summary["splits"]["dev"]["src_len_max"] > 50 * cfg.search.max_src_len


# -------------------------------------------------------------------------------------- the script
@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [(b"fine\nbroken \xff line\n", "c.en:2: invalid UTF-8"), (PNG, "c.en:1: invalid UTF-8")],
    ids=["invalid-utf8", "png"],
)
def test_prepare_data_script_prints_error_and_exits_2(tmp_path, content, message):
    (tmp_path / "c.en").write_bytes(content)
    (tmp_path / "c.fr").write_bytes(b"x\ny\n")
    result = subprocess.run(
        [
            sys.executable,
            "scripts/prepare_data.py",
            "data=text",
            f"data.text.train={tmp_path / 'c'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"run_dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
