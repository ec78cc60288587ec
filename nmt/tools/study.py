"""What a Hydra multirun study produced, as one table: a CSV row per run and a plot of dev BLEU against wall-clock
time for the best runs.

A training study (``scripts/train.py -m +study=budget``) leaves one run directory per variant, each with its
resolved ``config.yaml``, ``summary.json`` (vocabulary sizes) and ``metrics.json`` (validations with the training
clock). A decoding study (``scripts/evaluate.py -m ... search.beam_size=... search.alpha=...``) leaves one JSON per
setting; :func:`collect_decoding` tabulates those.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from nmt.errors import NmtError
from nmt.model.encoder import encoder_size
from nmt.model_dir import read_model_config

TRAINING_COLUMNS = [
    "run",
    "best_dev_bleu",
    "final_dev_bleu",
    "final_dev_ppl",
    "minutes",
    "updates",
    "epochs",
    "target_tokens_per_second",
    "parameters",
    "vocab",
    "rnn",
    "emb",
    "hidden",
    "enc_hidden",
    "step_order",
    "dropout",
    "label_smoothing",
    "lr",
    "schedule",
    "max_tokens",
]
DECODING_COLUMNS = ["file", "bleu", "chrf", "beam_size", "alpha", "length_norm", "sentences_per_second"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NmtError(f"{path}: unreadable ({exc})") from exc


def training_row(run_dir: Path) -> dict[str, Any]:
    """One finished run's settings and results (a run without ``metrics.json`` is not finished: NmtError)."""
    if not (run_dir / "metrics.json").is_file():
        raise NmtError(f"{run_dir}: no metrics.json (the run did not finish)")
    metrics = _read_json(run_dir / "metrics.json")
    cfg = read_model_config(run_dir)
    tok = _read_json(run_dir / "summary.json")["tokenizer"]
    kind = "joint" if cfg.tokenizer.joint else "separate"
    if cfg.tokenizer.trim_vocab:
        kind += " trimmed"
    last = metrics["validations"][-1] if metrics["validations"] else {}
    return {
        "run": run_dir.name,
        "best_dev_bleu": round(metrics["best_dev_bleu"], 2),
        "final_dev_bleu": round(last.get("bleu", 0.0), 2),
        "final_dev_ppl": round(last.get("ppl", float("nan")), 2),
        "minutes": round(metrics["train_minutes"], 1),
        "updates": metrics["steps"],
        "epochs": metrics["epochs"],
        "target_tokens_per_second": round(metrics["target_tokens_per_second"]),
        "parameters": metrics["parameters"],
        "vocab": f"{kind} {tok['src_vocab_size']}/{tok['tgt_vocab_size']}",
        "rnn": str(cfg.model.rnn_type),
        "emb": cfg.model.emb_size,
        "hidden": cfg.model.hidden_size,
        "enc_hidden": encoder_size(cfg.model),
        "step_order": str(cfg.model.decoder_step),
        "dropout": cfg.model.dropout,
        "label_smoothing": cfg.train.label_smoothing,
        "lr": cfg.train.lr,
        "schedule": str(cfg.train.schedule),
        "max_tokens": cfg.train.max_tokens,
        "_curve": [(v["elapsed"] / 60, v["bleu"]) for v in metrics["validations"] if "elapsed" in v],
    }


def collect_training(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every finished run under ``sweep_dir``, best dev BLEU first; unfinished runs are reported and skipped."""
    rows, unfinished = [], []
    for run_dir in sorted(p for p in Path(sweep_dir).iterdir() if (p / "config.yaml").is_file()):
        try:
            rows.append(training_row(run_dir))
        except NmtError:
            unfinished.append(run_dir.name)
    if unfinished:
        print(f"skipped {len(unfinished)} unfinished run(s): {', '.join(unfinished)}")
    if not rows:
        raise NmtError(
            f"{sweep_dir}: no finished training runs (directories with config.yaml + metrics.json)"
        )
    return sorted(rows, key=lambda r: -r["best_dev_bleu"])


def collect_decoding(decode_dir: Path) -> list[dict[str, Any]]:
    """One row per evaluation JSON in ``decode_dir`` (written by scripts/evaluate.py), best BLEU first."""
    rows = []
    for path in sorted(Path(decode_dir).glob("*.json")):
        result = _read_json(path)
        search = result.get("search")
        if search is None:
            continue  # not an evaluation of a model (e.g. a scored hypothesis file)
        rows.append(
            {
                "file": path.name,
                "bleu": round(result["bleu"], 2),
                "chrf": round(result["chrf"], 2),
                "beam_size": search["beam_size"],
                "alpha": search["alpha"],
                "length_norm": search["length_norm"],
                "sentences_per_second": round(result["sentences_per_second"], 1),
            }
        )
    if not rows:
        raise NmtError(f"{decode_dir}: no evaluation JSON files with search settings")
    return sorted(rows, key=lambda r: -r["bleu"])


def write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_bleu_vs_time(rows: list[dict[str, Any]], path: Path, top: int, reference: str = "base") -> None:
    """Dev BLEU against training minutes for the ``top`` best runs (plus ``reference`` when it is not among them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = rows[:top] + [r for r in rows[top:] if r["run"] == reference]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in shown:
        if row["_curve"]:
            style = "k--" if row["run"] == reference else "o-"
            ax.plot(*zip(*row["_curve"]), style, markersize=3, label=f"{row['run']} ({row['best_dev_bleu']})")
    ax.set_xlabel("training wall-clock minutes")
    ax.set_ylabel("dev BLEU (greedy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(sweep_dir: str | Path, decode_dir: str | Path | None = None, top: int = 5) -> dict[str, Path]:
    """``scripts/study_report.py``: write ``study.csv`` and ``bleu_vs_time.png`` into ``sweep_dir`` (and
    ``decoding.csv`` into ``decode_dir``), print the tables as Markdown; returns the written paths."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NmtError(f"sweep_dir={sweep_dir}: not a directory")
    rows = collect_training(sweep_dir)
    written = {"csv": sweep_dir / "study.csv", "plot": sweep_dir / "bleu_vs_time.png"}
    write_csv(rows, TRAINING_COLUMNS, written["csv"])
    plot_bleu_vs_time(rows, written["plot"], top)
    print(markdown_table(rows, TRAINING_COLUMNS))
    if decode_dir is not None:
        decoding = collect_decoding(Path(decode_dir))
        written["decoding"] = Path(decode_dir) / "decoding.csv"
        write_csv(decoding, DECODING_COLUMNS, written["decoding"])
        print()
        print(markdown_table(decoding, DECODING_COLUMNS))
    for path in written.values():
        print(f"written: {path}")
    return written
