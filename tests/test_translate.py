import os
import select
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import pytest
import sacrebleu
import torch
from corpus import loaded_after_import
from omegaconf import OmegaConf

from nmt.attention_dump import read_attention_dump
from nmt.config import (
    CleanConfig,
    ConfigValueError,
    EvaluateConfig,
    SearchConfig,
    TranslateConfig,
    VisualizeConfig,
    WeightsChoice,
)
from nmt.data.clean import clean_split
from nmt.data.features import CORPUS_FEATURES
from nmt.errors import NmtError
from nmt.evaluate import evaluate_model
from nmt.translate import (
    PIPE_CLOSED_STATUS,
    Translator,
    _chunks,
    attention_records,
    format_output,
    translate_file,
)
from nmt.visualize import visualize

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def translator(digit_model_dir):
    return Translator.from_dir(digit_model_dir)


def test_translates_digit_words(translator):
    out = translator.translate(["three one four", "two two"], SearchConfig(beam_size=5))
    assert [t.text for t in out] == ["trois un quatre", "deux deux"]


def test_one_output_per_input_in_order_with_blank_and_odd_lines(translator):
    lines = ["one", "", "   ", "two three", "\ufeffone", "four\x00five", "✓✓✓ ünknown", "six"]
    out = translator.translate(lines)
    assert len(out) == len(lines)
    assert out[1].text == "" and out[2].text == "" and out[1].nbest == []
    assert out[0].text == "un" and out[3].text == "deux trois" and out[7].text == "six"
    assert all("\n" not in t.text for t in out)


def test_batched_equals_one_by_one(translator):
    lines = ["one two three four", "five", "six seven", "eight nine zero one two"]
    together = [t.text for t in translator.translate(lines)]
    alone = [translator.translate([line])[0].text for line in lines]
    assert together == alone


def test_long_line_is_cut_with_a_warning_naming_the_line(translator):
    long_line = " ".join(["one"] * 300)
    with pytest.warns(UserWarning, match="line 2: .* cut to search.max_src_len=50"):
        out = translator.translate(["two", long_line], SearchConfig(beam_size=1, max_src_len=50))
    assert len(out) == 2 and out[1].text


def test_nbest_sorted_distinct_and_formatted(translator):
    out = translator.translate(["one two", ""], SearchConfig(beam_size=4, nbest=3))
    scores = [h.score for h in out[0].nbest]
    assert len(out[0].nbest) == 3 and scores == sorted(scores, reverse=True)
    assert len({tuple(h.tokens) for h in out[0].nbest}) == 3
    lines = format_output(out, 3).splitlines()
    assert len(lines) == 4 and lines[0].startswith("0 ||| un deux ||| ") and lines[3] == "1 ||| ||| 0.0000"


def test_translate_file_reads_bom_crlf_and_invalid_utf8(digit_model_dir, translator, tmp_path, capsys):
    (tmp_path / "in.txt").write_bytes(b"\xef\xbb\xbfone\r\ntwo\n\xff\xfe\nthree")
    cfg = TranslateConfig(
        model_dir=str(digit_model_dir), input=str(tmp_path / "in.txt"), output="-", progress=False
    )
    translate_file(cfg)
    captured = capsys.readouterr()
    out = captured.out.split("\n")
    # the lines as the model translates them once read cleanly (the tiny model's words are not the point)
    one, two, three = (h.text for h in translator.translate(["one", "two", "three"], cfg.search))
    assert len(out) == 5 and (out[0], out[1], out[3], out[4]) == (one, two, three, "")
    assert "invalid UTF-8 replaced by U+FFFD on 1 line(s): 3" in captured.err


@pytest.mark.parametrize("nfc", [True, False])
def test_translation_feeds_the_model_as_its_training_was_cleaned(digit_model_dir, tmp_path, nfc):
    """A model trained with data.clean.nfc=false keeps decomposed accents in its input, like its training text."""
    model_dir = tmp_path / "model"
    shutil.copytree(digit_model_dir, model_dir)
    config = OmegaConf.load(model_dir / "config.yaml")
    config.data.clean.nfc = nfc
    OmegaConf.save(config, model_dir / "config.yaml")
    line = "  one\u0301\u2028two\t three  "  # a decomposed accent, a line separator, a tab
    rows = {"id": ["1"], "src": [line], "tgt": ["x"], "refs": [[]]}
    trained, _ = clean_split(
        datasets.Dataset.from_dict(rows, features=CORPUS_FEATURES), CleanConfig(nfc=nfc), False, tmp_path, "t"
    )
    translator = Translator.from_dir(model_dir)
    assert (
        translator.normalise(line) == trained["src"][0] == ("on\u00e9" if nfc else "one\u0301") + " two three"
    )
    tokenizer = translator.tokenizer
    expected = tokenizer.src_pieces(tokenizer.encode_src([trained["src"][0]])[0])
    assert translator.translate([line])[0].src_pieces == expected


def test_translate_file_keeps_1000_lines(digit_model_dir, tmp_path):
    lines = [("one two" if i % 3 else "") for i in range(1000)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = TranslateConfig(
        model_dir=str(digit_model_dir),
        input=str(tmp_path / "in.txt"),
        output=str(tmp_path / "out.txt"),
        dump_attention=str(tmp_path / "att.pt"),
        search=SearchConfig(beam_size=2),
        progress=False,
    )
    translate_file(cfg)
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert out[-1] == "" and len(out) - 1 == 1000
    assert all((o == "") == (i == "") for i, o in zip(lines, out))
    records = list(read_attention_dump(tmp_path / "att.pt"))
    assert len(records) == 1000 and records[1]["tgt_tokens"][-1] == "</s>"
    att = records[1]["attention"]
    assert att.shape == (len(records[1]["tgt_tokens"]), len(records[1]["src_tokens"]))
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[0]))


@pytest.mark.slow
def test_cli_stdin_to_stdout_and_missing_model_dir(digit_model_dir, translator, tmp_path):
    run = subprocess.run(
        [sys.executable, "scripts/translate.py", f"model_dir={digit_model_dir}", "search.beam_size=3"],
        cwd=REPO,
        input="five six\n\nseven\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    expected = [t.text for t in translator.translate(["five six", "", "seven"], SearchConfig(beam_size=3))]
    assert run.stdout == "\n".join(expected) + "\n" and expected[0] == "cinq six" and expected[1] == ""
    bad = subprocess.run(
        [sys.executable, "scripts/translate.py", f"model_dir={tmp_path / 'nope'}"],
        cwd=REPO,
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not a directory" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_the_translate_command_does_not_load_training_plotting_or_hub_libraries():
    # each costs start-up time that translating a line with a local model directory does not need
    heavy = [
        "datasets",
        "matplotlib",
        "tensorboard",
        "torch.utils.tensorboard",
        "sacrebleu",
        "huggingface_hub",
    ]
    # torch is watched too: the check sees what the import does load
    assert loaded_after_import("nmt.cli, nmt.translate", ["torch", *heavy]) == ["torch"]


def test_invalid_model_dir_errors(tmp_path):
    (tmp_path / "config.yaml").write_text("model:\n  hidden_size: 8\n")
    with pytest.raises(NmtError):
        Translator.from_dir(tmp_path)


def test_int8_and_averaging_still_translate(digit_model_dir):
    int8 = Translator.from_dir(digit_model_dir, quantize="int8")
    averaged = Translator.from_dir(digit_model_dir, WeightsChoice(average=2))
    for t in (int8, averaged):
        assert len(t.translate(["one two", "three"])) == 2
    assert int8.translate(["one two three"])[0].text == "un deux trois"


def test_ensemble_of_the_last_checkpoints(digit_model_dir, tmp_path):
    steps = sorted(p.name for p in (digit_model_dir / "checkpoints").glob("step_*.pt"))
    ensemble = Translator.from_dir(digit_model_dir, WeightsChoice(ensemble_last=2)).model
    assert len(ensemble.members) == 2
    for member, name in zip(ensemble.members, steps[-2:]):
        expected = Translator.from_dir(digit_model_dir, WeightsChoice(checkpoint=name)).model.state_dict()
        assert all(torch.equal(member.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(NmtError, match="ensemble_last=2, but no step checkpoints"):
        Translator.from_dir(
            _copy_without_steps(digit_model_dir, tmp_path / "copy"), WeightsChoice(ensemble_last=2)
        )


def _copy_without_steps(model_dir: Path, copy: Path) -> Path:
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("step_*.pt"))
    return copy


def test_evaluate_model_matches_sacrebleu(digit_model_dir):
    results = evaluate_model(
        EvaluateConfig(model_dir=str(digit_model_dir), split="test", search=SearchConfig(beam_size=1))
    )
    assert results["search"]["beam_size"] == 1 and results["search"]["length_norm"] == "gnmt"
    assert results["weights"] == {"checkpoint": "best", "average": 0, "ensemble_last": 0}
    hyps = (digit_model_dir / "eval" / "test.hyp").read_text(encoding="utf-8").splitlines()
    refs = (digit_model_dir / "eval" / "test.ref").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(refs) == results["n_sentences"] == 16
    assert results["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert (digit_model_dir / "eval" / "test.json").is_file()


def test_evaluation_texts_follow_the_output_name(digit_model_dir, tmp_path):
    out = tmp_path / "beam2-alpha1.0.json"
    cfg = EvaluateConfig(model_dir=str(digit_model_dir), split="dev", output=str(out), average=2)
    results = evaluate_model(cfg)
    hyps = (tmp_path / "beam2-alpha1.0.hyp").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == results["n_sentences"] and results["weights"]["average"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"beam2-alpha1.0.{x}" for x in ("hyp", "json", "ref", "src")
    ]


def test_visualize_from_model_and_from_dump(digit_model_dir, tmp_path):
    paths = visualize(
        VisualizeConfig(
            model_dir=str(digit_model_dir),
            sentences=["one two", "three four five"],
            out_dir=str(tmp_path / "a"),
            formats=["png"],
            word_level=True,
        )
    )
    assert sorted(p.name for p in paths) == ["attention_01.png", "attention_02.png", "attention_grid.png"]
    translate_file(
        TranslateConfig(
            model_dir=str(digit_model_dir),
            input=str(_write(tmp_path, "one\n")),
            output=str(tmp_path / "o.txt"),
            dump_attention=str(tmp_path / "d.pt"),
        )
    )
    paths = visualize(VisualizeConfig(attention_file=str(tmp_path / "d.pt"), out_dir=str(tmp_path / "b")))
    assert sorted(p.name for p in paths) == ["attention_01.png", "attention_01.svg"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "in.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_ensemble_of_a_model_with_itself_equals_the_model(digit_model_dir, translator):
    pair = Translator.from_dir(digit_model_dir, WeightsChoice(ensemble=[str(digit_model_dir)]))
    lines = ["one two three", "four five", ""]
    alone = translator.translate(lines, SearchConfig(beam_size=3))
    both = pair.translate(lines, SearchConfig(beam_size=3))
    assert [t.text for t in both] == [t.text for t in alone]
    for a, b in zip(alone[:2], both[:2]):
        assert b.nbest[0].score == pytest.approx(a.nbest[0].score, abs=1e-5)
        torch.testing.assert_close(b.nbest[0].attention, a.nbest[0].attention)


def test_ensemble_mixes_distributions_and_checks_tokenizers(digit_model_dir, tmp_path):
    from nmt.model.ensemble import Ensemble

    members = [
        Translator.from_dir(digit_model_dir, WeightsChoice(checkpoint=name)).model
        for name in ("best", "step_00000200")
    ]
    src, lengths = torch.tensor([[5, 6, 3]]), torch.tensor([3])
    mixture = Ensemble(members).eval()
    enc = mixture.encode(src, lengths)
    log_probs, _, attention = mixture.decode_step(torch.tensor([2]), mixture.init_decoder_state(enc), enc)
    singles = [
        m.decode_step(torch.tensor([2]), m.init_decoder_state(m.encode(src, lengths)), m.encode(src, lengths))
        for m in members
    ]
    expected = (singles[0][0].exp() + singles[1][0].exp()) / 2
    torch.testing.assert_close(log_probs.exp(), expected)
    torch.testing.assert_close(attention, (singles[0][2] + singles[1][2]) / 2)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(NmtError):
        Translator.from_dir(digit_model_dir, WeightsChoice(ensemble=[str(other)]))


# ------------------------------------------------------------------------------------------ streaming
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CHUNK = 7  # small, so that a few thousand lines make hundreds of chunks


def streaming_input(n_lines: int) -> list[str]:
    """Digit sentences, with empty and whitespace lines and lines over max_src_len=40 tokens at chunk edges."""
    gen = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 7, (n_lines,), generator=gen).tolist()
    words = torch.randint(0, 10, (n_lines, 40), generator=gen).tolist()
    lines = [" ".join(DIGITS[w] for w in row[:n]) for row, n in zip(words, lengths)]
    for index in (CHUNK - 1, CHUNK, 5 * CHUNK, 5 * CHUNK + 1, n_lines - 1):  # last/first line of a chunk
        lines[index] = "" if index % 2 else "   "
    for index in (2 * CHUNK - 1, 2 * CHUNK, 9 * CHUNK - 1):
        lines[index] = " ".join(DIGITS[w] for w in words[index])  # 40 words, ~90 tokens: cut to 40
    return lines


def translate_to_file(model_dir: Path, tmp_path: Path, lines: list[str], name: str, **cfg) -> list[str]:
    """``translate_file`` of ``lines`` into ``tmp_path/name``; the warnings it gave."""
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        translate_file(
            TranslateConfig(
                model_dir=str(model_dir),
                input=str(tmp_path / "in.txt"),
                output=str(tmp_path / name),
                progress=False,
                device="cpu",
                **cfg,
            )
        )
    return cut_warnings(caught)


def cut_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "cut to search.max_src_len" in str(w.message)]


@pytest.mark.parametrize(
    ("nbest", "batch_tokens", "n_lines"),
    # n-best scores are printed to 4 decimals, which a batch of other sentences can move by one in the last
    # place: one sentence per batch makes both runs decode alike, so the n-best lists compare exactly (and
    # fewer lines keep its one-sentence searches to seconds: 300 lines are still 43 chunks)
    [(1, 4000, 2000), (2, 1, 300)],
)
@pytest.mark.slow
def test_chunked_translation_equals_translating_all_at_once(
    digit_model_dir, translator, tmp_path, nbest, batch_tokens, n_lines
):
    lines = streaming_input(n_lines)
    search = SearchConfig(beam_size=2, nbest=nbest, max_src_len=40, batch_tokens=batch_tokens)
    warned = translate_to_file(
        digit_model_dir, tmp_path, lines, "chunked.txt", search=search, chunk_lines=CHUNK
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expected = format_output(translator.translate(lines, search), nbest)
    chunked = (tmp_path / "chunked.txt").read_text(encoding="utf-8")
    assert chunked == expected
    assert warned == cut_warnings(caught)  # the same global line numbers
    assert [w.split(":")[0] for w in warned] == [f"line {i}" for i in (2 * CHUNK, 2 * CHUNK + 1, 9 * CHUNK)]
    out = chunked.splitlines()
    if nbest == 1:
        assert len(out) == len(lines) and out[CHUNK - 1] == out[CHUNK] == out[-1] == ""
    else:  # indices count over the whole input, an empty line keeps its one entry
        indices = [int(row.split(" ||| ")[0]) for row in out]
        assert indices == sorted(indices) and set(indices) == set(range(len(lines)))
        assert f"{5 * CHUNK} ||| ||| 0.0000" in out and out[-1] == f"{len(lines) - 1} ||| ||| 0.0000"
        assert indices.count(5 * CHUNK) == 1 and indices.count(5 * CHUNK + 2) == nbest


def test_chunked_attention_dump_equals_a_one_shot_dump(digit_model_dir, translator, tmp_path):
    lines = streaming_input(70)
    search = SearchConfig(
        beam_size=2, max_src_len=40, batch_tokens=1
    )  # one sentence per batch: exact weights
    dump = tmp_path / "att.pt"
    translate_to_file(
        digit_model_dir,
        tmp_path,
        lines,
        "out.txt",
        search=search,
        chunk_lines=CHUNK,
        dump_attention=str(dump),
    )
    chunked = list(read_attention_dump(dump))
    with pytest.warns(UserWarning, match="cut to search.max_src_len=40"):
        whole = attention_records(translator.translate(lines, search), translator.tokenizer)
    assert len(chunked) == len(whole) == len(lines)
    for got, expected in zip(chunked, whole):
        assert got.keys() == expected.keys()
        assert all(got[key] == expected[key] for key in ("source", "src_tokens", "tgt_tokens"))
        assert torch.equal(got["attention"], expected["attention"])
    assert chunked[CHUNK]["tgt_tokens"] == [] and len(chunked[2 * CHUNK]["src_tokens"]) == 40 + 1  # EOS


def test_chunk_lines_must_be_positive(digit_model_dir):
    with pytest.raises(ConfigValueError, match=r"chunk_lines=0: must be >= 1"):
        TranslateConfig(model_dir=str(digit_model_dir), chunk_lines=0)


def test_an_error_midway_leaves_no_output_and_no_dump(digit_model_dir, tmp_path, monkeypatch):
    (tmp_path / "out.txt").write_text("previous\n")
    translate = Translator.translate
    calls: list[int] = []

    def fail_on_the_third_chunk(self, lines, *args, **kwargs):
        calls.append(len(lines))
        if len(calls) == 3:
            raise NmtError("stop")
        return translate(self, lines, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate", fail_on_the_third_chunk)
    with pytest.raises(NmtError, match="stop"):
        translate_to_file(
            digit_model_dir,
            tmp_path,
            ["one"] * 50,
            "out.txt",
            chunk_lines=CHUNK,
            dump_attention=str(tmp_path / "a.pt"),
        )
    assert calls == [CHUNK] * 3
    assert (tmp_path / "out.txt").read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]  # no dump, no temp file


def _script(digit_model_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "scripts/translate.py"),
        f"model_dir={digit_model_dir}",
        "device=cpu",
        *args,
    ]


@pytest.mark.slow
def test_a_pipe_gets_the_first_chunk_while_the_input_is_still_open(digit_model_dir, translator):
    # one thread, as in this process, so that the script's words equal the translator's
    one_two, three = (
        (h.text + "\n").encode()
        for h in translator.translate(["one two", "three"], TranslateConfig("m").search)
    )
    process = subprocess.Popen(
        _script(digit_model_dir, f"chunk_lines={CHUNK}", "threads=1"),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        process.stdin.write(b"one two\n" * CHUNK)
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no output within 120 s of a whole chunk of input"
        assert process.stdout.readline() == one_two
        assert process.poll() is None  # still waiting for more input
        process.stdin.write(b"three\n")
        process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
    assert rest == one_two * (CHUNK - 1) + three


@pytest.mark.slow
def test_a_closed_pipe_ends_the_translation_quietly(digit_model_dir, tmp_path):
    """``translate ... | head -1``: the reader goes away after one line; no traceback, no dump left behind."""
    (tmp_path / "in.txt").write_text("one two\n" * 3000, encoding="utf-8")
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(
            _script(
                digit_model_dir, f"input={tmp_path / 'in.txt'}", "chunk_lines=20", "dump_attention=att.pt"
            ),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert process.stdout.readline() == b"un deux\n"
        process.stdout.close()
        status = process.wait(timeout=120)
    errors = (tmp_path / "stderr.txt").read_text(encoding="utf-8")
    assert status == PIPE_CLOSED_STATUS, errors
    assert "Traceback" not in errors and "Error" not in errors and errors.strip() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "stderr.txt"]


def test_chunks_start_at_first_and_double_up_to_the_size():
    numbered = [(n, f"line {n}") for n in range(1, 101)]
    chunks = list(_chunks(numbered, 40, 8))
    assert [(start, len(lines)) for start, lines in chunks] == [(1, 8), (9, 16), (25, 32), (57, 40), (97, 4)]
    assert [line for _, lines in chunks for line in lines] == [line for _, line in numbered]
    assert [len(lines) for _, lines in _chunks(numbered, 40, 40)] == [40, 40, 20]
