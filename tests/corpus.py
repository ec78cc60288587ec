"""A tiny word-for-word parallel corpus and a model trained on it, shared by the tests that need a real model
directory (translate, evaluate, visualize, notebooks, serve)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from nmt.config import Config, DataConfig, ModelConfig, TextConfig, TokenizerConfig, TrainConfig

# A small bilingual vocabulary for tokenizer and data-preparation tests (no meaning intended).
WORDS_EN = [
    "the",
    "a",
    "man",
    "woman",
    "sees",
    "house",
    "river",
    "bread",
    "gives",
    "takes",
    "small",
    "large",
    "old",
    "young",
]
WORDS_FR = [
    "le",
    "la",
    "un",
    "une",
    "homme",
    "femme",
    "voit",
    "maison",
    "rivière",
    "pain",
    "donne",
    "prend",
    "petit",
    "grand",
    "vieux",
    "jeune",
]

EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FR = ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"]


def write_digit_corpus(root: Path, n_train: int = 240, n_dev: int = 16, seed: int = 0) -> str:
    """Write ``root/{train,dev,test}.{en,fr}``: digit-word sequences and their French ('three one' -> 'trois un');
    returns ``root`` as a string."""
    root.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_dev)):
        src, tgt = [], []
        for _ in range(n):
            length = int(torch.randint(2, 6, (1,), generator=gen))
            digits = torch.randint(0, 10, (length,), generator=gen).tolist()
            src.append(" ".join(EN[d] for d in digits))
            tgt.append(" ".join(FR[d] for d in digits))
        (root / f"{split}.en").write_text("\n".join(src) + "\n", encoding="utf-8")
        (root / f"{split}.fr").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return str(root)


def digit_config(root: Path, **train_overrides) -> Config:
    """A tiny config over :func:`write_digit_corpus` data in ``root``; the run directory is ``root/run``."""
    corpus = write_digit_corpus(root / "corpus")
    train_cfg = dict(
        max_tokens=200,
        max_steps=12,
        max_minutes=0,
        validate_every=4,
        log_every=2,
        lr=5e-3,
        progress=False,
        tensorboard=False,
        patience=0,
    )
    train_cfg.update(train_overrides)
    return Config(
        data=DataConfig(
            source="text",
            text=TextConfig(train=f"{corpus}/train", dev=f"{corpus}/dev", test=f"{corpus}/test"),
            cache_dir=str(root / "cache"),
        ),
        tokenizer=TokenizerConfig(vocab_size=40),
        model=ModelConfig(emb_size=16, hidden_size=16, attention_size=16, dropout=0.1),
        train=TrainConfig(**train_cfg),
        run_dir=str(root / "run"),
        threads=1,
    )


def digit_cli_overrides(corpus: str, cache: Path) -> list[str]:
    """The command-line form of :func:`digit_config`'s data, tokenizer and model, for scripts/train.py."""
    return [
        "data.source=text",
        f"data.text.train={corpus}/train",
        f"data.text.dev={corpus}/dev",
        f"data.text.test={corpus}/test",
        f"data.cache_dir={cache}",
        "tokenizer.vocab_size=40",
        "model.emb_size=16",
        "model.hidden_size=16",
        "model.attention_size=16",
        "train.max_tokens=200",
        "train.max_minutes=0",
        "train.tensorboard=false",
    ]


def trained_digit_model(root: Path) -> Path:
    """Train a 32-unit model that translates digit words well (dev BLEU > 50, ~10 s); returns its directory."""
    from nmt.train.trainer import train

    cfg = digit_config(root, max_steps=600, validate_every=200, lr=1e-2)
    cfg.model = ModelConfig(emb_size=32, hidden_size=32, attention_size=32, dropout=0.1)
    train(cfg)
    return Path(cfg.run_dir)


def real_package_file(locate: Callable[[], Path]) -> Path:
    """The data file ``locate()`` finds inside an installed package, or skip the test when it is not there."""
    import pytest

    from nmt.errors import NmtError

    try:
        path = locate()
    except NmtError as exc:
        pytest.skip(str(exc))
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def loaded_after_import(modules: str, watched: Sequence[str]) -> list[str]:
    """Which of the ``watched`` modules a fresh interpreter has loaded after ``import modules`` (a comma-separated
    list): how a test proves that a light module does not drag a heavy one in."""
    code = f"import sys, {modules}; print(','.join(m for m in {list(watched)!r} if m in sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return [name for name in run.stdout.strip().split(",") if name]
