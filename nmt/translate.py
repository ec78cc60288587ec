"""Translation: a model directory turns lines into lines.

``Translator.from_dir(model_dir).translate(lines)`` keeps the input's line count and order exactly: an empty or
whitespace-only line gives an empty line, and a line longer than ``search.max_src_len`` subword tokens is cut,
with a warning naming the line, never dropped.
"""

from __future__ import annotations

import re
import sys
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.checkpoint import load_checkpoint
from nmt.config import Config, EvaluateConfig, Quantize, SearchConfig, TranslateConfig, load_config
from nmt.data.batching import eval_batches
from nmt.device import resolve_device
from nmt.errors import NmtError
from nmt.model import build_model
from nmt.model.ensemble import Ensemble
from nmt.search import Hypothesis, search
from nmt.tokenizer import Tokenizer

CHECKPOINT_DIR = "checkpoints"


@torch.inference_mode()
def decode_ids(
    model: torch.nn.Module,
    src_ids: Sequence[Sequence[int]],
    cfg: SearchConfig,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[Hypothesis]]:
    """Search every source sentence (subword ids, no specials); n-best lists in input order.

    Batches hold at most ``cfg.batch_tokens`` source tokens and are sorted by length, so padding stays small.
    ``on_batch(n)`` is called after each batch of ``n`` sentences (progress bars).
    """
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for batch in eval_batches(src_ids, None, cfg.batch_tokens):
        batch = batch.to(device)
        for index, nbest in zip(batch.indices.tolist(), search(model, batch.src, batch.src_lengths, cfg)):
            results[index] = nbest
        if on_batch is not None:
            on_batch(len(batch.indices))
    return results


@dataclass
class Translation:
    """One input line's result; ``nbest`` is empty for an empty input line."""

    source: str
    src_pieces: list[str]
    nbest: list[Hypothesis]
    hypotheses: list[str]  # detokenized, best first

    @property
    def text(self) -> str:
        return self.hypotheses[0] if self.hypotheses else ""


_SURROGATES = re.compile("[\ud800-\udfff]")


def normalize_line(line: str) -> str:
    """NFC, newline characters of any kind (``\\r``, ``\\x0b``, ``\\x1c``, ``\\x85``, ``\\u2028``, ...) turned into
    spaces, whitespace collapsed: one line stays one line. Lone surrogates (a ``surrogateescape`` decode of bad
    bytes) become U+FFFD, which the tokenizer can take."""
    return " ".join(unicodedata.normalize("NFC", _SURROGATES.sub("\ufffd", line)).split())


def resolve_checkpoint(model_dir: Path, checkpoint: str) -> Path:
    """``best`` / ``last`` / a file name inside ``model_dir/checkpoints`` / a path; ``best`` falls back to
    ``last`` for a run that never validated."""
    candidates = [
        model_dir / CHECKPOINT_DIR / f"{checkpoint}.pt",
        model_dir / CHECKPOINT_DIR / checkpoint,
        Path(checkpoint),
    ]
    if checkpoint == "best":
        candidates.append(model_dir / CHECKPOINT_DIR / "last.pt")
    for path in candidates:
        if path.is_file():
            return path
    raise NmtError(
        f"{model_dir}: no checkpoint {checkpoint!r} in {model_dir / CHECKPOINT_DIR} (train a model first)"
    )


def average_state_dicts(paths: Sequence[Path], device: torch.device) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights in several checkpoints of one run."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        weights = load_checkpoint(path, map_location=device)["model"]
        for name, tensor in weights.items():
            total[name] = total[name] + tensor.float() if name in total else tensor.float().clone()
    return {name: tensor / len(paths) for name, tensor in total.items()}


def kept_checkpoints(model_dir: Path, k: int, option: str) -> list[Path]:
    """The last ``k`` validated checkpoints a run kept (``train.keep_checkpoints``), oldest first."""
    kept = sorted((model_dir / CHECKPOINT_DIR).glob("step_*.pt"))[-k:]
    if not kept:
        raise NmtError(f"{model_dir}: {option}={k}, but no step checkpoints are kept there")
    return kept


def load_model_dir(
    model_dir: str | Path, checkpoint: str = "best", average: int = 0
) -> tuple[Config, Tokenizer, torch.nn.Module]:
    """Config, tokenizer and model (weights loaded, on the CPU) of a model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NmtError(f"model_dir={model_dir}: not a directory (point it at a training run directory)")
    config = load_config(model_dir / "config.yaml", Config)
    tokenizer = Tokenizer.load(model_dir)
    model = build_model(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    if average > 0:
        weights = average_state_dicts(kept_checkpoints(model_dir, average, "average"), torch.device("cpu"))
    else:
        weights = load_checkpoint(resolve_checkpoint(model_dir, checkpoint), map_location="cpu")["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise NmtError(f"{model_dir}: checkpoint does not match config.yaml's model: {exc}") from exc
    return config, tokenizer, model


class Translator:
    """A trained model with its tokenizer, ready to translate lines."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: Tokenizer, config: Config, device: torch.device
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.device = device

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        checkpoint: str = "best",
        device: str = "auto",
        quantize: Quantize | str = Quantize.none,
        average: int = 0,
        ensemble: Sequence[str | Path] = (),
        ensemble_last: int = 0,
    ) -> Translator:
        """Load ``model_dir`` (config.yaml, sentencepiece model(s), checkpoints/).

        ``average=K`` averages the weights of the last K validated checkpoints instead of loading one;
        ``ensemble_last=K`` keeps those K checkpoints as separate models and ensembles them; ``ensemble`` names
        more model directories with the same tokenizer. An ensemble averages its members' next-token
        distributions at every step. ``quantize="int8"`` applies dynamic int8 quantization to the RNN and
        linear layers (CPU only).
        """
        if ensemble_last > 0:
            paths = kept_checkpoints(Path(model_dir), ensemble_last, "ensemble_last")
            loaded = [load_model_dir(model_dir, str(path)) for path in paths]
            config, tokenizer, _ = loaded[0]
            members = [member for _, _, member in loaded]
        else:
            config, tokenizer, model = load_model_dir(model_dir, checkpoint, average)
            members = [model]
        for other in ensemble:
            _, other_tokenizer, member = load_model_dir(other, checkpoint, average)
            if other_tokenizer.fingerprint() != tokenizer.fingerprint():
                raise NmtError(
                    f"ensemble: {other} has another tokenizer than {model_dir}; members must share one"
                )
            members.append(member)
        model = members[0] if len(members) == 1 else Ensemble(members)
        torch_device = resolve_device(device)
        if Quantize(quantize) == Quantize.int8:
            if torch_device.type != "cpu":
                raise NmtError("quantize=int8 runs on the CPU only: add device=cpu")
            model = quantize_int8(model)
        return cls(model.to(torch_device), tokenizer, config, torch_device)

    @classmethod
    def from_config(cls, cfg: TranslateConfig | EvaluateConfig) -> Translator:
        """:meth:`from_dir` with the model directory, weights, device and quantization a script config names."""
        assert cfg.model_dir is not None
        return cls.from_dir(
            cfg.model_dir,
            cfg.checkpoint,
            cfg.device,
            cfg.quantize,
            cfg.average,
            cfg.ensemble,
            cfg.ensemble_last,
        )

    def translate(
        self,
        lines: Sequence[str],
        cfg: SearchConfig | None = None,
        progress: bool = False,
    ) -> list[Translation]:
        """Translate ``lines``; the result has exactly one :class:`Translation` per line, in order."""
        cfg = cfg or SearchConfig()
        cleaned = [normalize_line(line) for line in lines]
        todo = [i for i, text in enumerate(cleaned) if text]
        src_ids = self.tokenizer.encode_src([cleaned[i] for i in todo])
        for position, ids in enumerate(src_ids):
            if len(ids) > cfg.max_src_len:
                warnings.warn(
                    f"line {todo[position] + 1}: {len(ids)} subword tokens, cut to search.max_src_len={cfg.max_src_len}",
                    stacklevel=2,
                )
                src_ids[position] = ids[: cfg.max_src_len]
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="sent", file=sys.stderr, dynamic_ncols=True)
        nbests = decode_ids(self.model, src_ids, cfg, self.device, on_batch=bar.update if bar else None)
        if bar is not None:
            bar.close()
        results = [Translation(source=line, src_pieces=[], nbest=[], hypotheses=[]) for line in lines]
        for position, index in enumerate(todo):
            nbest = nbests[position]
            results[index] = Translation(
                source=lines[index],
                src_pieces=self.tokenizer.src_pieces(src_ids[position]),
                nbest=nbest,
                # normalized, so that no tokenizer (e.g. one with byte pieces) can put a line break in the output
                hypotheses=[normalize_line(self.tokenizer.decode_tgt(h.tokens)) for h in nbest],
            )
        return results


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of the linear and recurrent layers (weights int8, activations float)."""
    from torch.ao.quantization import quantize_dynamic

    layers = {torch.nn.Linear, torch.nn.GRU, torch.nn.LSTM, torch.nn.GRUCell, torch.nn.LSTMCell}
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; it is still the CPU path torch ships.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        return quantize_dynamic(model, layers, dtype=torch.qint8)


def read_lines(path: str) -> list[str]:
    """Read ``path`` (``-``: stdin) as lines split on ``\\n`` only, so the count matches ``wc -l`` (plus a last
    line without newline). A BOM and ``\\r`` line ends are removed; invalid UTF-8 is replaced (U+FFFD) and
    reported by line number on stderr."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise NmtError(f"{path}: cannot read input: {exc.strerror}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines, bad = [], []
    for number, chunk in enumerate(raw, start=1):
        chunk = chunk.removesuffix(b"\r")
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(chunk.decode("utf-8", errors="replace"))
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        print(
            f"warning: {path}: invalid UTF-8 replaced by U+FFFD on {len(bad)} line(s): {shown}",
            file=sys.stderr,
        )
    return lines


def format_output(results: Sequence[Translation], nbest: int) -> str:
    """One line per input line; with ``nbest > 1``, ``index ||| hypothesis ||| score`` lines (Moses style)."""
    if nbest <= 1:
        return "".join(r.text + "\n" for r in results)
    out = []
    for index, result in enumerate(results):
        if not result.nbest:
            out.append(f"{index} ||| ||| 0.0000\n")
        for text, hyp in zip(result.hypotheses, result.nbest):
            out.append(f"{index} ||| {text} ||| {hyp.score:.4f}\n")
    return "".join(out)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename: the output is all there or not at all."""
    path = Path(path)
    temp = path.with_name(f".tmp-{path.name}")
    try:
        temp.write_text(text, encoding="utf-8")
        temp.replace(path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise NmtError(f"{path}: cannot write output: {exc.strerror}") from exc


def attention_records(results: Sequence[Translation], tokenizer: Tokenizer) -> list[dict]:
    """Best hypothesis per line as ``{source, src_tokens, tgt_tokens, attention [tgt_len+1, src_len]}``; the
    token lists include the EOS column/row the weights have."""
    records = []
    for r in results:
        if not r.nbest:
            records.append(
                {"source": r.source, "src_tokens": [], "tgt_tokens": [], "attention": torch.zeros(0, 0)}
            )
            continue
        best = r.nbest[0]
        records.append(
            {
                "source": r.source,
                "src_tokens": r.src_pieces + ["</s>"],
                "tgt_tokens": tokenizer.tgt_pieces(best.tokens) + ["</s>"],
                "attention": best.attention.float().cpu(),
            }
        )
    return records


def translate_file(cfg: TranslateConfig) -> None:
    """``scripts/translate.py``: translate ``cfg.input`` into ``cfg.output``; nothing is written on error."""
    from nmt.device import set_threads

    set_threads(cfg.threads)
    translator = Translator.from_config(cfg)
    lines = read_lines(cfg.input)
    results = translator.translate(lines, cfg.search, progress=cfg.progress and cfg.output != "-")
    text = format_output(results, cfg.search.nbest)
    if cfg.dump_attention:
        torch.save(attention_records(results, translator.tokenizer), cfg.dump_attention)
    if cfg.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(cfg.output, text)
