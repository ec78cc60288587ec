import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch

from nmt.config import EvaluateConfig, SearchConfig, TranslateConfig, VisualizeConfig
from nmt.errors import NmtError
from nmt.evaluate import evaluate_model
from nmt.translate import Translator, format_output, normalize_line, read_lines, translate_file
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


def test_read_lines_handles_bom_crlf_and_invalid_utf8(tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\n\xff\xfe\nthree")
    assert read_lines(str(path)) == ["one", "two", "\ufffd\ufffd", "three"]
    assert "invalid UTF-8 replaced by U+FFFD on 1 line(s): 3" in capsys.readouterr().err


def test_normalize_line_keeps_one_line():
    assert normalize_line("a\u2028b\x0bc\x85d  e\t") == "a b c d e"
    assert normalize_line("e\u0301") == "\u00e9"  # NFC


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
    records = torch.load(tmp_path / "att.pt", weights_only=True)
    assert len(records) == 1000 and records[1]["tgt_tokens"][-1] == "</s>"
    att = records[1]["attention"]
    assert att.shape == (len(records[1]["tgt_tokens"]), len(records[1]["src_tokens"]))
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[0]))


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


def test_invalid_model_dir_errors(tmp_path):
    (tmp_path / "config.yaml").write_text("model:\n  hidden_size: 8\n")
    with pytest.raises(NmtError):
        Translator.from_dir(tmp_path)


def test_int8_and_averaging_still_translate(digit_model_dir):
    int8 = Translator.from_dir(digit_model_dir, quantize="int8")
    averaged = Translator.from_dir(digit_model_dir, average=2)
    for t in (int8, averaged):
        assert len(t.translate(["one two", "three"])) == 2
    assert int8.translate(["one two three"])[0].text == "un deux trois"


def test_ensemble_of_the_last_checkpoints(digit_model_dir, tmp_path):
    steps = sorted(p.name for p in (digit_model_dir / "checkpoints").glob("step_*.pt"))
    ensemble = Translator.from_dir(digit_model_dir, ensemble_last=2).model
    assert len(ensemble.members) == 2
    for member, name in zip(ensemble.members, steps[-2:]):
        expected = Translator.from_dir(digit_model_dir, checkpoint=name).model.state_dict()
        assert all(torch.equal(member.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(NmtError, match="ensemble_last=2, but no step checkpoints"):
        Translator.from_dir(_copy_without_steps(digit_model_dir, tmp_path / "copy"), ensemble_last=2)


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
    pair = Translator.from_dir(digit_model_dir, ensemble=[digit_model_dir])
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
        Translator.from_dir(digit_model_dir, checkpoint=name).model for name in ("best", "step_00000200")
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
        Translator.from_dir(digit_model_dir, ensemble=[other])
