import json
import shutil
import statistics
import time

import pytest
from corpus import digit_config

from nmt.config import BenchmarkConfig, DecoderStep
from nmt.errors import NmtError
from nmt.shortlist import LEXICON_FILE
from nmt.tools.benchmark import format_benchmark, gemm_flops_per_second, profile_decoding, run_benchmark
from nmt.translate import Translator

pytestmark = pytest.mark.slow  # subprocesses and end-to-end runs: minutes, not seconds


def test_gemm_rate_is_2n_cubed_over_the_fastest_repeat(monkeypatch):
    readings = iter([0.0, 0.5, 1.0, 1.25, 2.0, 2.4])  # repeats of 0.5 s, 0.25 s and 0.4 s
    monkeypatch.setattr(time, "perf_counter", lambda: next(readings))
    assert gemm_flops_per_second(64, repeats=3) == 2 * 64**3 / 0.25


def test_the_training_figures_train_the_peers_recipe_not_our_defaults():
    """The same-shape comparison with OpenNMT-py (shared/bench/peers/onmt/rnn_enfr.yaml) must not follow a change
    of our own defaults: 3,000-token batches, learning rate 1e-3, no label smoothing, input feeding, no bridge,
    attention of the decoder's size."""
    mirrored = BenchmarkConfig().config
    assert (mirrored.train.max_tokens, mirrored.train.lr, mirrored.train.label_smoothing) == (3000, 1e-3, 0.0)
    model = mirrored.model
    assert (model.decoder_step, model.bridge, model.enc_hidden_size, model.attention_size) == (
        DecoderStep.luong,
        False,
        128,
        256,
    )
    assert mirrored.tokenizer.vocab_size == 8000


def test_benchmark_end_to_end_on_a_tiny_model(digit_model_dir, tmp_path):
    cfg = BenchmarkConfig(
        config=digit_config(tmp_path),
        model_dir=str(digit_model_dir),
        warmup_updates=2,
        train_updates=3,
        repeats=2,
        beams=[1, 3],
        gemm_size=128,
        profile_updates=2,
        profile_sentences=5,
        output=str(tmp_path / "bench.json"),
    )
    results = run_benchmark(cfg)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved == results  # the JSON holds what was measured
    assert results["train_target_tokens_per_second"] == statistics.median(
        results["train_windows_tokens_per_second"]
    )
    assert len(results["train_windows_tokens_per_second"]) == 2
    assert (
        results["train_mfu"]
        == results["train_model_flops_per_second"] / results["gemm_fp32_flops_per_second"]
    )
    assert 0 < results["train_mfu"] < 1
    assert [(r["quantize"], r["beam"]) for r in results["decode"]] == [
        ("none", 1),
        ("none", 3),
        ("int8", 1),
        ("int8", 3),
    ]
    for row in results["decode"]:
        assert row["sentences"] == 16 and row["sentences_per_second"] == 16 / row["seconds"]
    # the trained digit model, scored against the split's references (an untrained one scores ~0; the exact
    # figure depends on the CPU: 45 on one machine of this type, above 50 on another)
    assert results["decode"][0]["bleu"] > 30
    table = format_benchmark(results).splitlines()
    assert f"MFU {100 * results['train_mfu']:.1f} %" in table[2]
    assert [line.split()[:2] for line in table[-4:]] == [
        ["none", "1"],
        ["none", "3"],
        ["int8", "1"],
        ["int8", "3"],
    ]
    profile = (tmp_path / "bench_profile.txt").read_text()
    assert "aten::mm" in profile and "Self CPU time total" in profile
    assert "Self CPU time total" in (tmp_path / "bench_decode_profile.txt").read_text()


def test_decoding_profile_covers_the_search(digit_model_dir, tmp_path):
    translator = Translator.from_dir(str(digit_model_dir))
    ops = profile_decoding(translator, ["one two", "three"], beam=3, output=tmp_path / "bench.json")
    # beam search's own ops: the top-k over the candidates and the output layer's log-softmax
    assert {"aten::topk", "aten::log_softmax"} <= ops
    table = (tmp_path / "bench_decode_profile.txt").read_text()
    assert "Self CPU time total" in table
    assert len(table.splitlines()) <= 25 + 6  # 25 ops, the header and its rules, the total


def test_decoding_only(digit_model_dir, tmp_path):
    cfg = BenchmarkConfig(
        config=digit_config(tmp_path),
        model_dir=str(digit_model_dir),
        train_updates=0,
        repeats=1,
        beams=[2],
        quantize=["none"],
        shortlist=[False, True],
        gemm_size=64,
        output=str(tmp_path / "bench.json"),
    )
    results = run_benchmark(cfg)
    assert results["train_mfu"] is None and "train_target_tokens_per_second" not in results
    assert [(r["quantize"], r["shortlist"], r["beam"]) for r in results["decode"]] == [
        ("none", False, 2),
        ("none", True, 2),
    ]
    table = format_benchmark(results)
    assert "training:" not in table
    assert [line.split()[:3] for line in table.splitlines()[-2:]] == [
        ["none", "2", "full"],
        ["none", "2", "short"],
    ]


def test_a_shortlist_benchmark_without_a_lexicon_is_an_error(digit_model_dir, tmp_path):
    bare = tmp_path / "model"
    shutil.copytree(digit_model_dir, bare)
    (bare / LEXICON_FILE).unlink()
    cfg = BenchmarkConfig(
        config=digit_config(tmp_path),
        model_dir=str(bare),
        train_updates=0,
        quantize=["none"],
        shortlist=[True],
        output=str(tmp_path / "bench.json"),
    )
    with pytest.raises(NmtError, match=f"{bare} has no {LEXICON_FILE}"):
        run_benchmark(cfg)
