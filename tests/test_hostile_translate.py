"""Hostile input to translation: whatever the bytes, one output line per input line, in order, or a clear error
before anything is written. Input lines are the input split on b"\\n" (a last line without newline counts)."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.config import SearchConfig, TranslateConfig
from nmt.errors import NmtError
from nmt.translate import Translator, translate_file

REPO = Path(__file__).resolve().parents[1]
SEARCH = SearchConfig(beam_size=2)
# Pieces that break naive line handling: every Unicode line break, controls, NUL, a BOM, bytes that are not
# UTF-8 (or that decode to surrogates), and real sentences whose translations must stay in their place.
PIECES = [
    b"one two",
    b"three",
    b" ",
    b"\t",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n\n",
    b"\x0b",
    b"\x0c",
    b"\x1c",
    b"\x1d",
    b"\x1e",
    b"\x85",
    "\x85".encode(),
    "\u2028".encode(),
    "\u2029".encode(),
    b"\x00",
    b"\x01\x1b[31m",
    b"\x7f",
    b"\xff\xfe",
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate: invalid
    b"\xc3",  # a truncated sequence
    b"\xef\xbb\xbf",  # a BOM, at the start or anywhere
    "\u200b\ufeff\u202e".encode(),
    "é\u0301".encode(),
]
HOSTILE_BYTES = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from(PIECES), max_size=300).map(b"".join),
)


def input_lines(data: bytes) -> list[bytes]:
    """The line contract, independently of nmt.lines.read_lines (a leading BOM is no content)."""
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def translate_bytes(model_dir: Path, tmp: Path, data: bytes, **search) -> str:
    (tmp / "in.txt").write_bytes(data)
    cfg = TranslateConfig(
        model_dir=str(model_dir),
        input=str(tmp / "in.txt"),
        output=str(tmp / "out.txt"),
        search=SearchConfig(**{"beam_size": 2, **search}),
        progress=False,
        device="cpu",
    )
    translate_file(cfg)
    return (tmp / "out.txt").read_bytes().decode("utf-8")  # strict: the output is valid UTF-8


def assert_one_line_each(out: str, data: bytes) -> None:
    lines = input_lines(data)
    assert out.count("\n") == len(lines)
    assert len(out.splitlines()) == len(lines)  # no \r, \x0b, \x85, \u2028 ... inside an output line
    assert out == "" or out.endswith("\n")
    for raw, translated in zip(lines, out.split("\n")):
        if not raw.decode("utf-8", "replace").replace("\ufeff", "").split():
            assert translated == "", raw  # an empty input line stays empty, in its place


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=HOSTILE_BYTES)
def test_any_bytes_give_one_output_line_per_input_line(digit_model_dir, tmp_path, data):
    out = translate_bytes(digit_model_dir, tmp_path, data)
    assert_one_line_each(out, data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        st.one_of(
            st.text(max_size=200),
            st.sampled_from(["one two", "\ud800", "a\udcffb", "\u2028", "x\r\ny", "\x00", "", "  "]),
        ),
        max_size=40,
    )
)
@pytest.mark.slow
def test_translator_api_keeps_count_and_emptiness(digit_model_dir, lines):
    translator = Translator.from_dir(digit_model_dir, device="cpu")
    results = translator.translate(lines, SEARCH)
    assert len(results) == len(lines)
    for line, result in zip(lines, results):
        assert result.source == line
        assert result.text == translator.normalise(result.text) and len(result.text.splitlines()) <= 1
        if not translator.normalise(line):
            assert result.text == "" and result.nbest == []


def test_translations_stay_in_place_among_garbage(digit_model_dir, tmp_path):
    translator = Translator.from_dir(digit_model_dir, device="cpu")
    probes = ["one two three", "four five", "six", "seven eight nine zero", "two two"]
    alone = {p: translator.translate([p], SEARCH)[0].text for p in probes}
    assert alone["one two three"] == "un deux trois"
    garbage = [b"", b"\x00\xff", "\u2028\x85".encode(), b"   ", b"\r", b"\xed\xa0\x80 one", b"x" * 5000]
    lines, expected = [], []
    for i in range(60):
        if i % 3 == 0:
            probe = probes[(i // 3) % len(probes)]
            lines.append(probe.encode())
            expected.append((i, alone[probe]))
        else:
            lines.append(garbage[i % len(garbage)])
    data = b"\n".join(lines)  # no final newline: the last line still counts
    with pytest.warns(UserWarning, match="5001 subword tokens, cut to search.max_src_len=400"):
        out = translate_bytes(digit_model_dir, tmp_path, data)
    assert_one_line_each(out, data)
    got = out.split("\n")
    for index, translation in expected:
        assert got[index] == translation, index


def test_huge_lines_and_thousands_of_empty_lines(digit_model_dir, tmp_path):
    long_line = " ".join(["one", "two", "three"] * 17_000).encode()  # 51k words
    data = b"\n" * 3000 + long_line + b"\n" + b"\r\n" * 2000 + b"four\n"
    with pytest.warns(UserWarning, match=r"line 3001: \d+ subword tokens, cut to search.max_src_len=400"):
        out = translate_bytes(digit_model_dir, tmp_path, data, beam_size=1)
    assert_one_line_each(out, data)
    got = out.split("\n")
    assert got[3000] != "" and got[5001] == "quatre"  # the cut line still gets a translation


def test_a_tokenizer_that_emits_line_breaks_cannot_split_output_lines(digit_model_dir, monkeypatch):
    translator = Translator.from_dir(digit_model_dir, device="cpu")
    monkeypatch.setattr(translator.tokenizer, "decode_tgt", lambda ids: "un\ndeux\u2028trois\r")
    results = translator.translate(["one two three", "four"], SEARCH)
    assert [r.text for r in results] == ["un deux trois", "un deux trois"]


def test_bad_paths_fail_before_writing(digit_model_dir, tmp_path):
    (tmp_path / "in.txt").write_text("one\n")
    base = dict(model_dir=str(digit_model_dir), progress=False, device="cpu")
    with pytest.raises(NmtError, match="cannot read"):
        translate_file(TranslateConfig(input=str(tmp_path), output=str(tmp_path / "o.txt"), **base))
    with pytest.raises(NmtError, match="cannot write output"):
        translate_file(
            TranslateConfig(input=str(tmp_path / "in.txt"), output=str(tmp_path / "no/o.txt"), **base)
        )
    (tmp_path / "o.txt").write_text("previous\n")
    with pytest.raises(NmtError, match="missing: file not found"):
        translate_file(
            TranslateConfig(input=str(tmp_path / "missing"), output=str(tmp_path / "o.txt"), **base)
        )
    assert (tmp_path / "o.txt").read_text() == "previous\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "o.txt"]


@pytest.mark.slow
def test_script_on_binary_input_keeps_the_line_count(digit_model_dir, tmp_path):
    data = bytes(range(256)) * 4 + b"one two\n\xff\n"
    (tmp_path / "in.bin").write_bytes(data)
    result = subprocess.run(
        [
            sys.executable,
            "scripts/translate.py",
            f"model_dir={digit_model_dir}",
            f"input={tmp_path / 'in.bin'}",
        ],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"Traceback" not in result.stderr and b"invalid UTF-8 replaced" in result.stderr
    out = result.stdout.decode("utf-8")
    assert_one_line_each(out, data)
