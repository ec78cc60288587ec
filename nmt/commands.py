"""The table of commands: one row per ``nmt COMMAND`` (and ``scripts/<script>.py``), read by the dispatcher in
:mod:`nmt.cli`, by ``nmt --help`` and by the scripts; plus the few lines of glue some commands need.

Everything is named by ``"module:attribute"`` strings and imported only when that command runs, so that
``nmt --help`` imports nothing and ``nmt translate`` only what translation needs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nmt.config import Config, StudyReportConfig


@dataclass(frozen=True)
class Command:
    """One command: what ``nmt --help`` says about it, and where its code and its config live."""

    name: str  # the words after `nmt`: "train", "recipe stock"
    help: str  # one line for `nmt --help`
    run: str  # "module:function" taking the typed config (or, without `config`, the argument list)
    script: str  # scripts/<script>.py runs the same command; also Hydra's job name (the log file's name)
    config: str | None = None  # the primary YAML (without .yaml) in CONF_DIR / config_dir; None: not Hydra
    schema: str = ""  # "module:Class", the dataclass the composed config becomes
    config_dir: str = ""  # relative to CONF_DIR
    groups: tuple[str, ...] = ()  # the config groups `COMMAND --help` lists (subfolders of the config dir)
    rewrite_argv: str = ""  # "module:function" rewriting [prog, *args] before Hydra reads it


_TRAINING_GROUPS = ("data", "model", "train", "variant", "study")

COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command(
            "prepare",
            "clean a corpus, train the tokenizer, tokenize and cache; print a summary",
            run="nmt.commands:prepare",
            script="prepare_data",
            config="config",
            schema="nmt.config:Config",
            groups=_TRAINING_GROUPS,
        ),
        Command(
            "train",
            "train a model into run_dir (the model directory)",
            run="nmt.train.trainer:train",
            script="train",
            config="config",
            schema="nmt.config:Config",
            groups=_TRAINING_GROUPS,
        ),
        Command(
            "translate",
            "translate a text file (or stdin) with a model directory, one output line per input line",
            run="nmt.translate:translate_file",
            script="translate",
            config="translate",
            schema="nmt.config:TranslateConfig",
        ),
        Command(
            "evaluate",
            "score a model directory on a corpus split, or a hypothesis file, with BLEU, chrF and TER",
            run="nmt.evaluate:evaluate_model",
            script="evaluate",
            config="evaluate",
            schema="nmt.config:EvaluateConfig",
        ),
        Command(
            "visualize",
            "attention heatmaps (PNG/SVG) of a model directory's translations or of a dumped attention file",
            run="nmt.visualize:visualize",
            script="visualize",
            config="visualize",
            schema="nmt.config:VisualizeConfig",
        ),
        Command(
            "serve",
            "serve a model directory: REST API (POST /translate, GET /health, GET /info) and a page at /",
            run="nmt.serve.server:serve",
            script="serve",
            config="serve",
            schema="nmt.config:ServeConfig",
        ),
        Command(
            "benchmark",
            "training and decoding speed, peak memory and MFU on this machine",
            run="nmt.tools.benchmark:run_benchmark",
            script="benchmark",
            config="benchmark",
            schema="nmt.config:BenchmarkConfig",
        ),
        Command(
            "lexicon",
            "add the vocabulary shortlist's table (lexicon.npz) to a model directory, from its training data",
            run="nmt.shortlist:lexicon_command",
            script="lexicon",
            config="lexicon",
            schema="nmt.config:LexiconConfig",
        ),
        Command(
            "push",
            "upload a model directory to the Hugging Face hub",
            run="nmt.hub:push",
            script="push",
            config="push",
            schema="nmt.config:PushConfig",
        ),
        Command(
            "fault_drill",
            "SIGKILL a training run again and again, resume it each time, check that nothing was lost",
            run="nmt.tools.fault_drill:fault_drill",
            script="fault_drill",
            config="fault_drill",
            schema="nmt.config:FaultDrillConfig",
            groups=("data", "model", "train"),
        ),
        Command(
            "study_report",
            "tabulate a multirun study (study.csv) and plot BLEU against training time",
            run="nmt.commands:study_report",
            script="study_report",
            config="study_report",
            schema="nmt.config:StudyReportConfig",
        ),
        Command(
            "big_corpus",
            "write a large parallel corpus (Moses pair or TSV, optionally gzipped) from the Bible's versions",
            run="nmt.tools.big_corpus:big_corpus",
            script="make_big_corpus",
            config="big_corpus",
            schema="nmt.config:BigCorpusConfig",
        ),
        Command(
            "scale",
            "time and peak memory of each data-preparation stage on a large corpus, then of training's start",
            run="nmt.tools.scale:scale_bench",
            script="scale_bench",
            config="scale",
            schema="nmt.config:ScaleConfig",
        ),
        Command(
            "gpu_check",
            "train train=full for at most 8 minutes, evaluate on test: target tokens/s, BLEU, peak memory",
            run="nmt.tools.gpu_check:gpu_check",
            script="gpu_check",
            config="gpu_check",
            schema="nmt.config:GpuCheckConfig",
            groups=("data", "model", "train"),
        ),
        Command(
            "thread_study",
            "every command under each thread count and OpenMP wait policy, alone and beside busy neighbours",
            run="nmt.tools.thread_study:thread_study",
            script="thread_study",
            config="thread_study",
            schema="nmt.config:ThreadStudyConfig",
        ),
        Command(
            "load_test",
            "load-test a running server on loopback: N concurrent clients, bounded in requests and time",
            run="nmt.commands:load_test",
            script="load_test",
        ),
        Command(
            "recipe sentiment",
            "sentiment analysis with a GRU; `nmt recipe sentiment predict TEXT...` uses the saved model",
            run="nmt.recipes.sentiment:run_sentiment",
            script="recipe_sentiment",
            config="config",
            schema="nmt.recipes.config:SentimentConfig",
            config_dir="recipe/sentiment",
            groups=("train",),
            rewrite_argv="nmt.recipes.sentiment:predict_argv",
        ),
        Command(
            "recipe image_rows",
            "image classification with an RNN reading one pixel row per step",
            run="nmt.recipes.image_rows:run_image_rows",
            script="recipe_image_rows",
            config="config",
            schema="nmt.recipes.config:ImageRowsConfig",
            config_dir="recipe/image_rows",
            groups=("train",),
        ),
        Command(
            "recipe stock",
            "stock forecasting with an LSTM, one day ahead, next to the naive forecast",
            run="nmt.recipes.stock:run_stock",
            script="recipe_stock",
            config="config",
            schema="nmt.recipes.config:StockConfig",
            config_dir="recipe/stock",
            groups=("train",),
        ),
    )
}


def load(reference: str) -> Any:
    """The attribute a ``"module:attribute"`` string names, importing its module now."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


# ------------------------------------------------------------------------------------------------ glue
def prepare(cfg: Config) -> None:
    """``nmt prepare``: prepare the corpus into ``run_dir`` and print its summary table."""
    from nmt.data.prepare import format_summary, prepare_data

    prepared = prepare_data(cfg, Path(cfg.run_dir))
    print(format_summary(prepared.summary))
    print(f"details: {Path(cfg.run_dir) / 'summary.json'}")


def study_report(cfg: StudyReportConfig) -> None:
    """``nmt study_report``: the tables and plot of :func:`nmt.tools.study.report`."""
    from nmt.tools.study import report

    report(cfg.sweep_dir, cfg.decode_dir, cfg.top)


def load_test(args: list[str], prog: str) -> None:
    """``nmt load_test --url URL --clients 1 8 32 ...``: one table row per client count, each also on stderr
    as soon as it is measured."""
    example = (
        f"example: {prog} --url http://127.0.0.1:8000 --clients 2 8 32 --requests 0 --duration 60 "
        "--malformed 1000 --server-pid PID"
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description=COMMANDS["load_test"].help,
        epilog=example,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a loopback server")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="one run per value")
    parser.add_argument("--requests", type=int, default=400, help="most requests per run (0: no limit)")
    parser.add_argument("--duration", type=float, default=20.0, help="most seconds per run")
    parser.add_argument("--lines-per-request", type=int, default=1)
    parser.add_argument("--beam-size", type=int, default=None, help="default: the server's")
    parser.add_argument("--input", default=None, help="sentences, one per line (default: digit words)")
    parser.add_argument("--label", default=None, help="a first column naming the run, e.g. 'batching on'")
    parser.add_argument(
        "--malformed", type=int, default=0, help="malformed requests per run (each should get 4xx)"
    )
    parser.add_argument("--server-pid", type=int, default=None, help="the server's process: sample its RSS")
    options = parser.parse_args(args)

    from nmt.tools.load_test import format_table
    from nmt.tools.load_test import load_test as measure

    rows = measure(
        options.url,
        options.clients,
        options.requests,
        options.duration,
        options.input,
        options.lines_per_request,
        options.beam_size,
        options.label,
        on_row=lambda row: print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True),
        malformed=options.malformed,
        server_pid=options.server_pid,
    )
    print(format_table(rows))
