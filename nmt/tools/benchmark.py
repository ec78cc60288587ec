"""Speed figures on this machine: training target tokens/s (steady state), peak RSS, decoding sentences/s and
target tokens/s (greedy and beam, fp32 and int8) with their BLEU, and MFU.

MFU is the model's useful FLOPs per second over the fp32 GEMM rate measured here in the same run. Model FLOPs
are counted by :func:`nmt.model.flops.forward_flops` per real (unpadded) sentence pair — matrix products only,
2 FLOPs per multiply-add — and a training update costs 3x the forward pass (backward ≈ 2x forward).
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from nmt.config import BenchmarkConfig, Quantize, TranslationSearchConfig
from nmt.device import set_threads
from nmt.errors import NmtError
from nmt.train.monitor import peak_rss_mib


def gemm_flops_per_second(size: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 rate of a ``size x size`` matmul (2 size^3 FLOPs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def measure_training(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Steady-state training throughput: ``warmup_updates`` untimed, then ``repeats`` windows of
    ``train_updates``; medians over the windows."""
    from nmt.train.trainer import Trainer

    trainer = Trainer(cfg.config)
    model = trainer.model
    batches = iter_batches(trainer)
    for _ in range(cfg.warmup_updates):
        trainer._update([next(batches)[1]])
    rates, flop_rates = [], []
    for _ in range(cfg.repeats):
        tokens = flops = 0
        elapsed = 0.0
        for _ in range(cfg.train_updates):
            (src_lens, tgt_lens), batch = next(batches)
            started = time.perf_counter()
            result = trainer._update([batch])
            elapsed += time.perf_counter() - started
            if result is None:
                raise NmtError("benchmark: a training update had a non-finite loss")
            tokens += result[2]
            flops += 3 * sum(model.forward_flops(s, t)["total"] for s, t in zip(src_lens, tgt_lens))
        rates.append(tokens / elapsed)
        flop_rates.append(flops / elapsed)
    if cfg.profile_updates:
        profile_training(trainer, batches, cfg.profile_updates, Path(cfg.output))
    return {
        "train_target_tokens_per_second": statistics.median(rates),
        "train_model_flops_per_second": statistics.median(flop_rates),
        "train_windows_tokens_per_second": rates,
        "train_peak_rss_mib": peak_rss_mib(),
        "parameters": model.num_parameters(),
        "max_tokens": cfg.config.train.max_tokens,
    }


def profile_training(trainer: Any, batches: Any, updates: int, output: Path) -> None:
    """torch.profiler over ``updates`` training updates: the ops by self CPU time, printed and written to
    ``<output stem>_profile.txt``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            trainer._update([next(batches)[1]])
    write_profile(
        prof.key_averages(), output.with_name(output.stem + "_profile.txt"), f"{updates} training updates"
    )


def profile_decoding(translator: Any, sources: list[str], beam: int, output: Path) -> set[str]:
    """torch.profiler over translating ``sources`` with beam size ``beam``: the ops by self CPU time, printed
    and written to ``<output stem>_decode_profile.txt``. Returns the names of every op profiled."""
    from torch.profiler import ProfilerActivity, profile

    search = TranslationSearchConfig(beam_size=beam)
    translator.translate(sources[:1], search, attention=False)  # warm-up: thread pool, allocator
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        translator.translate(sources, search, attention=False)
    averages = prof.key_averages()
    path = output.with_name(output.stem + "_decode_profile.txt")
    write_profile(averages, path, f"beam {beam} decoding of {len(sources)} sentences")
    return {event.key for event in averages}


def write_profile(averages: Any, path: Path, what: str) -> None:
    """The 25 ops with the most self CPU time in a profile's ``key_averages()``, printed and written to ``path``."""
    table = averages.table(sort_by="self_cpu_time_total", row_limit=25)
    path.write_text(table + "\n", encoding="utf-8")
    print(f"profile of {what} (written to {path}):\n{table}")


def iter_batches(trainer: Any):
    """Training batches forever (epoch after epoch), with their real (src, tgt) lengths incl. EOS/BOS."""
    epoch = 0
    while True:
        trainer.sampler.set_epoch(epoch)
        for indices in trainer.sampler:
            batch = trainer._batch(indices)
            yield (batch.src_lengths.tolist(), (batch.tgt_out != 0).sum(1).tolist()), batch
        epoch += 1


def measure_decoding(cfg: BenchmarkConfig) -> list[dict[str, Any]]:
    """Translate the split with each quantization, shortlist choice and beam size; median time over ``repeats``.

    Raises:
        NmtError: when ``shortlist`` asks for the shortlist and the model directory has no lexicon (the figure
            would be the full vocabulary's under the shortlist's name).
    """
    from nmt.data.corpus import load_corpus
    from nmt.evaluate import split_streams
    from nmt.metrics import score_corpus
    from nmt.shortlist import LEXICON_FILE
    from nmt.translate import Translator

    rows = []
    for quantize in cfg.quantize:
        device = "cpu" if Quantize(quantize) == Quantize.int8 else cfg.config.device
        translator = Translator.from_dir(cfg.model_dir, device=device, quantize=quantize)
        if any(cfg.shortlist) and translator.lexicon is None:
            raise NmtError(
                f"shortlist={cfg.shortlist}: {cfg.model_dir} has no {LEXICON_FILE}; "
                f"add one with `nmt lexicon model_dir={cfg.model_dir}`"
            )
        splits, _ = load_corpus(translator.config.data)
        sources, refs = split_streams(splits[cfg.split])
        if cfg.profile_sentences and Quantize(quantize) == Quantize.none:
            profile_decoding(translator, sources[: cfg.profile_sentences], max(cfg.beams), Path(cfg.output))
        for shortlist, beam in itertools.product(cfg.shortlist, cfg.beams):
            search = TranslationSearchConfig(beam_size=beam, shortlist=shortlist)
            times = []
            for _ in range(cfg.repeats):
                started = time.perf_counter()
                results = translator.translate(sources, search, attention=False)
                times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            pieces = sum(len(r.nbest[0].tokens) for r in results if r.nbest)
            scores = score_corpus([r.text for r in results], refs[:1], metrics=("bleu", "chrf"))
            rows.append(
                {
                    "quantize": str(quantize),
                    "shortlist": shortlist,
                    "beam": beam,
                    "sentences": len(sources),
                    "seconds": seconds,
                    "sentences_per_second": len(sources) / seconds,
                    "target_tokens_per_second": pieces / seconds,
                    "bleu": scores["bleu"],
                    "chrf": scores["chrf"],
                }
            )
    return rows


def run_benchmark(cfg: BenchmarkConfig) -> dict[str, Any]:
    """``scripts/benchmark.py``: measure, print a table, write JSON."""
    set_threads(cfg.config.threads)
    gemm = gemm_flops_per_second(cfg.gemm_size)
    train = measure_training(cfg) if cfg.train_updates else {}
    decode = measure_decoding(cfg) if cfg.model_dir else []
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "gemm_fp32_flops_per_second": gemm,
        **train,
        "train_mfu": train["train_model_flops_per_second"] / gemm if train else None,
        "decode": decode,
    }
    Path(cfg.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(format_benchmark(results))
    print(f"written to {cfg.output}")
    return results


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def format_benchmark(results: dict[str, Any]) -> str:
    lines = [
        f"machine: {results['machine']}",
        f"fp32 GEMM: {results['gemm_fp32_flops_per_second'] / 1e9:.1f} GFLOP/s",
    ]
    if results["train_mfu"] is not None:
        lines.append(
            f"training: {results['train_target_tokens_per_second']:,.0f} target tokens/s "
            f"({results['parameters']:,} parameters, {results['max_tokens']} tokens/batch), "
            f"MFU {100 * results['train_mfu']:.1f} %, peak RSS {results['train_peak_rss_mib']:,.0f} MiB"
        )
    if results["decode"]:
        lines.append(
            f"{'decoding':<10}{'beam':>5}{'vocab':>7}{'sent/s':>10}{'tok/s':>10}{'BLEU':>8}{'chrF':>8}"
        )
        for row in results["decode"]:
            vocab = "short" if row["shortlist"] else "full"
            lines.append(
                f"{row['quantize']:<10}{row['beam']:>5}{vocab:>7}{row['sentences_per_second']:>10.1f}"
                f"{row['target_tokens_per_second']:>10.0f}{row['bleu']:>8.2f}{row['chrf']:>8.2f}"
            )
    return "\n".join(lines)
