import json

from corpus import digit_config

from nmt.benchmark import format_benchmark, gemm_flops_per_second, run_benchmark
from nmt.config import BenchmarkConfig


def test_gemm_rate_is_plausible():
    rate = gemm_flops_per_second(128, repeats=2)
    assert 1e7 < rate < 1e14


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
        output=str(tmp_path / "bench.json"),
    )
    results = run_benchmark(cfg)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["train_target_tokens_per_second"] == results["train_target_tokens_per_second"] > 0
    assert len(saved["train_windows_tokens_per_second"]) == 2
    assert 0 < results["train_mfu"] < 1
    assert [(r["quantize"], r["beam"]) for r in results["decode"]] == [
        ("none", 1),
        ("none", 3),
        ("int8", 1),
        ("int8", 3),
    ]
    assert all(r["sentences"] == 16 and r["sentences_per_second"] > 0 for r in results["decode"])
    assert "int8" in format_benchmark(results) and "MFU" in format_benchmark(results)
    profile = (tmp_path / "bench_profile.txt").read_text()
    assert "aten::mm" in profile and "Self CPU time total" in profile


def test_decoding_only(digit_model_dir, tmp_path):
    cfg = BenchmarkConfig(
        config=digit_config(tmp_path),
        model_dir=str(digit_model_dir),
        train_updates=0,
        repeats=1,
        beams=[2],
        quantize=["none"],
        gemm_size=64,
        output=str(tmp_path / "bench.json"),
    )
    results = run_benchmark(cfg)
    assert results["train_mfu"] is None and "train_target_tokens_per_second" not in results
    assert [(r["quantize"], r["beam"]) for r in results["decode"]] == [("none", 2)]
    assert "training:" not in format_benchmark(results)
