"""nmt/tools/gpu_check.py on a CPU: conf/gpu_check.yaml with train=smoke over the tiny digit corpus, trained
and evaluated in this process; the figures it prints and writes are present and agree with each other."""

import json
from pathlib import Path

from corpus import digit_cli_overrides, write_digit_corpus
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nmt.cli import CONF_DIR
from nmt.config import GpuCheckConfig, to_object
from nmt.tools.gpu_check import format_figures, gpu_check


def smoke_config(tmp_path: Path) -> GpuCheckConfig:
    corpus = write_digit_corpus(tmp_path / "corpus")
    overrides = ["train=smoke", *digit_cli_overrides(corpus, tmp_path / "cache")]
    overrides += [f"run_dir={tmp_path / 'run'}", "device=cpu", "test_search.beam_size=2"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return to_object(compose("gpu_check", overrides), GpuCheckConfig)


def test_the_yaml_trains_full_for_at_most_8_minutes_unless_told_otherwise(tmp_path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = to_object(compose("gpu_check"), GpuCheckConfig)
    assert (cfg.train.max_minutes, cfg.train.precision, cfg.model.hidden_size) == (8.0, "bf16", 512)
    assert (cfg.split, cfg.run_dir, cfg.output) == ("test", "runs/gpu-check", None)
    smoke = smoke_config(tmp_path)  # the digit overrides set train.max_minutes=0: the step budget alone
    assert (smoke.train.max_steps, smoke.train.max_minutes, smoke.model.hidden_size) == (30, 0.0, 16)


def test_gpu_check_on_cpu_prints_and_writes_consistent_figures(tmp_path, capsys):
    cfg = smoke_config(tmp_path)
    figures = gpu_check(cfg)
    printed = capsys.readouterr().out
    run_dir = Path(cfg.run_dir)

    assert json.loads((run_dir / "gpu_check.json").read_text()) == figures
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (figures["device"], figures["steps"], figures["stop_reason"]) == (
        "cpu",
        30,
        metrics["stop_reason"],
    )
    assert figures["target_tokens"] == metrics["target_tokens"] > 0
    assert figures["target_tokens_per_second"] == metrics["target_tokens_per_second"]
    assert (
        abs(figures["target_tokens_per_second"] * figures["train_minutes"] * 60 - figures["target_tokens"])
        < 1
    )
    evaluation = json.loads((run_dir / "eval" / "gpu_check_test.json").read_text())
    assert figures["test_bleu"] == evaluation["bleu"] and 0 <= figures["test_bleu"] <= 100
    assert (evaluation["split"], evaluation["beam_size"], evaluation["n_sentences"]) == ("test", 2, 16)
    assert figures["peak_rss_mib"] >= metrics["peak_rss_mib"] > 0
    assert figures["train_peak_device_mib"] is None and figures["peak_device_mib"] is None  # no CUDA here
    assert figures["wall_seconds"] >= figures["train_minutes"] * 60
    # the model directory holds a plain training config: the check's own keys stay out of it
    assert "test_search" not in OmegaConf.load(run_dir / "config.yaml")
    table = format_figures(figures)
    assert table in printed and "peak device" not in table
    for label in ("training target tokens/s", "test BLEU", "peak host RSS MiB"):
        assert f"| {label} |" in table
