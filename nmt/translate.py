"""Translation: a model directory turns lines into lines.

``Translator.from_dir(model_dir).translate(lines)`` keeps the input's line count and order exactly: an empty or
whitespace-only line gives an empty line, and a line longer than ``search.max_src_len`` subword tokens is cut,
with a warning naming the line, never dropped. A line is normalised exactly as the model's training text was
(:func:`nmt.text_norm.normalise` with the model directory's ``data.clean``) before it is tokenized.

:func:`translate_file` streams: it reads, translates and writes ``chunk_lines`` lines at a time, so memory stays
bounded by a chunk whatever the input's length, and a pipe sees each chunk as soon as it is translated.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import torch

from nmt import text_norm
from nmt.attention_dump import MAGIC, encode_chunk
from nmt.checkpoint import average_state_dicts, kept_checkpoints, load_checkpoint, resolve_checkpoint
from nmt.config import Config, Quantize, SearchConfig, TranslateConfig, TranslationSearchConfig, WeightsChoice
from nmt.decode import decode_ids
from nmt.device import resolve_device
from nmt.errors import NmtError
from nmt.lines import STDIN, OnInvalid, read_lines
from nmt.model import build_model
from nmt.model.ensemble import Ensemble
from nmt.model.folded import fold
from nmt.model_dir import is_hub_name, read_model_config
from nmt.search import Hypothesis
from nmt.shortlist import LEXICON_FILE, Lexicon, Shortlist, load_lexicon
from nmt.tokenizer import Tokenizer


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


def local_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` itself, or the local snapshot of an ``hf://`` name (fetched into the hub cache if needed)."""
    if not is_hub_name(model_dir):
        return Path(model_dir)
    from nmt.hub import resolve_model_dir  # huggingface_hub: only for a model on the hub

    return resolve_model_dir(model_dir)


def load_model_dir(
    model_dir: str | Path, weights: WeightsChoice | None = None
) -> tuple[Config, Tokenizer, torch.nn.Module]:
    """Config, tokenizer and model (weights loaded, on the CPU) of a model directory.

    Of ``weights`` (default: ``WeightsChoice()``), ``checkpoint`` names the file and ``average=K`` averages the
    last K kept step checkpoints instead; ensembling is :meth:`Translator.from_dir`'s.
    """
    weights = weights or WeightsChoice()
    model_dir = local_model_dir(model_dir)
    if not model_dir.is_dir():
        raise NmtError(f"model_dir={model_dir}: not a directory (point it at a training run directory)")
    config = read_model_config(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    model = build_model(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    if weights.average > 0:
        paths = kept_checkpoints(model_dir, weights.average, "average")
        state = average_state_dicts(paths, torch.device("cpu"))
    else:
        path = resolve_checkpoint(model_dir, weights.checkpoint)
        state = load_checkpoint(path, map_location="cpu")["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise NmtError(f"{model_dir}: checkpoint does not match config.yaml's model: {exc}") from exc
    return config, tokenizer, model


class Translator:
    """A trained model with its tokenizer, ready to translate lines; ``lexicon`` (the model directory's
    ``lexicon.npz``, or None) is what ``search.shortlist=true`` draws its shortlists from."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        config: Config,
        device: torch.device,
        lexicon: Lexicon | None = None,
        model_dir: str | Path | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.lexicon = lexicon
        self.model_dir = model_dir
        self._warned_no_lexicon = False

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        weights: WeightsChoice | None = None,
        device: str = "auto",
        quantize: Quantize | str = Quantize.none,
    ) -> Translator:
        """Load ``model_dir`` (config.yaml, sentencepiece model(s), checkpoints/) with ``weights`` (default:
        ``WeightsChoice()``, the ``best`` checkpoint).

        ``weights.average=K`` averages the weights of the last K validated checkpoints instead of loading one;
        ``weights.ensemble_last=K`` keeps those K checkpoints as separate models and ensembles them;
        ``weights.ensemble`` names more model directories with the same tokenizer. An ensemble averages its
        members' next-token distributions at every step. ``quantize="int8"`` applies dynamic int8 quantization
        to the RNN and linear layers (CPU only).
        """
        weights = weights or WeightsChoice()
        model_dir = local_model_dir(model_dir)
        if weights.ensemble_last > 0:
            paths = kept_checkpoints(model_dir, weights.ensemble_last, "ensemble_last")
            loaded = [load_model_dir(model_dir, WeightsChoice(checkpoint=str(path))) for path in paths]
            config, tokenizer, _ = loaded[0]
            members = [member for _, _, member in loaded]
        else:
            config, tokenizer, model = load_model_dir(model_dir, weights)
            members = [model]
        for other in weights.ensemble:
            _, other_tokenizer, member = load_model_dir(other, weights)
            if other_tokenizer.fingerprint() != tokenizer.fingerprint():
                raise NmtError(
                    f"ensemble: {other} has another tokenizer than {model_dir}; members must share one"
                )
            members.append(member)
        model = (members[0] if len(members) == 1 else Ensemble(members)).eval()
        torch_device = resolve_device(device)
        if Quantize(quantize) == Quantize.int8:
            if torch_device.type != "cpu":
                raise NmtError("quantize=int8 runs on the CPU only: add device=cpu")
            # not folded: int8 makes the products that folding removes cheap already, and the folded model's
            # float tables and mixing made int8 slower (README, speed section)
            model = quantize_int8(model)
        else:  # folded for search (nmt.model.folded): the same function with fewer products per step
            model = fold(model, compiled=torch_device.type == "cpu")
        lexicon = load_lexicon(model_dir, (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size))
        return cls(model.to(torch_device), tokenizer, config, torch_device, lexicon, model_dir)

    @classmethod
    def from_config(cls, cfg: WeightsChoice) -> Translator:
        """:meth:`from_dir` as a script config says: any config that inherits :class:`WeightsChoice` and has
        ``model_dir``, ``device`` and ``quantize`` (``TranslateConfig``, ``EvaluateConfig``, ...)."""
        model_dir = cfg.model_dir  # type: ignore[attr-defined]
        if model_dir is None:
            raise NmtError("give model_dir=RUN_DIR (the directory a training run wrote)")
        return cls.from_dir(model_dir, cfg, cfg.device, cfg.quantize)  # type: ignore[attr-defined]

    def normalise(self, line: str) -> str:
        """``line`` as the model's training data was cleaned (:func:`nmt.text_norm.normalise` with the model
        directory's ``data.clean``): what the tokenizer gets."""
        return text_norm.normalise(line, self.config.data.clean.nfc)

    def shortlist(self, cfg: SearchConfig) -> Shortlist | None:
        """The shortlist that ``cfg`` asks for (``search.shortlist`` of a :class:`TranslationSearchConfig`), or
        None: full-vocabulary search. Without a lexicon it warns, once per translator, and searches in full."""
        if not (isinstance(cfg, TranslationSearchConfig) and cfg.shortlist):
            return None
        if self.lexicon is None:
            if not self._warned_no_lexicon:
                self._warned_no_lexicon = True
                warnings.warn(
                    f"{self.model_dir}: no {LEXICON_FILE}, so search.shortlist=true decodes over the full "
                    f"vocabulary; add one with `nmt lexicon model_dir={self.model_dir}`",
                    stacklevel=3,
                )
            return None
        return Shortlist(self.lexicon, cfg.shortlist_frequent, cfg.shortlist_per_source)

    def translate(
        self,
        lines: Sequence[str],
        cfg: SearchConfig | None = None,
        on_batch: Callable[[int], None] | None = None,
        first_line: int = 1,
        attention: bool = True,
    ) -> list[Translation]:
        """Translate ``lines``; the result has exactly one :class:`Translation` per line, in order.

        ``on_batch(n)`` is called after each decoding batch of ``n`` non-empty lines (progress bars);
        ``first_line`` is the number of ``lines[0]`` in its file, for the warning about a line that is cut;
        ``attention=False`` leaves every hypothesis's ``attention`` None (faster, for text alone).
        """
        cfg = cfg or SearchConfig()
        cleaned = [self.normalise(line) for line in lines]
        todo = [i for i, text in enumerate(cleaned) if text]
        src_ids = self.tokenizer.encode_src([cleaned[i] for i in todo])
        for position, ids in enumerate(src_ids):
            if len(ids) > cfg.max_src_len:
                warnings.warn(
                    f"line {first_line + todo[position]}: {len(ids)} subword tokens, cut to "
                    f"search.max_src_len={cfg.max_src_len}",
                    stacklevel=2,
                )
                src_ids[position] = ids[: cfg.max_src_len]
        nbests = decode_ids(
            self.model, src_ids, cfg, self.device, on_batch, attention, shortlist=self.shortlist(cfg)
        )
        results = [Translation(source=line, src_pieces=[], nbest=[], hypotheses=[]) for line in lines]
        for position, index in enumerate(todo):
            nbest = nbests[position]
            results[index] = Translation(
                source=lines[index],
                src_pieces=self.tokenizer.src_pieces(src_ids[position]),
                nbest=nbest,
                # normalised too, so that no tokenizer (e.g. one with byte pieces) can put a line break in the output
                hypotheses=[self.normalise(self.tokenizer.decode_tgt(h.tokens)) for h in nbest],
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


def format_output(results: Sequence[Translation], nbest: int, first_index: int = 0) -> str:
    """One line per input line; with ``nbest > 1``, ``index ||| hypothesis ||| score`` lines (Moses style), the
    index counted from 0 over the whole input: ``results[0]`` is input line ``first_index``."""
    if nbest <= 1:
        return "".join(r.text + "\n" for r in results)
    out = []
    for index, result in enumerate(results, first_index):
        if not result.nbest:
            out.append(f"{index} ||| ||| 0.0000\n")
        for text, hyp in zip(result.hypotheses, result.nbest):
            out.append(f"{index} ||| {text} ||| {hyp.score:.4f}\n")
    return "".join(out)


class AtomicOutput:
    """A file written in pieces into a temp file in its directory, renamed onto ``path`` at the end: a reader never
    sees part of it, and on any error nothing is left behind (a file already at ``path`` stays as it was).

    ``with AtomicOutput(path, "output") as out: out.write(...)`` renames when the block ends normally and removes
    the temp file when it raises. ``what`` names the file in errors (``out.txt: cannot write output: ...``).
    """

    def __init__(self, path: str | Path, what: str, binary: bool = False) -> None:
        self.path = Path(path)
        self.what = what
        self.temp = self.path.with_name(f".tmp-{self.path.name}")
        encoding = None if binary else "utf-8"
        try:
            self.handle: IO[Any] = open(self.temp, "wb" if binary else "w", encoding=encoding)  # noqa: SIM115 -- __exit__ closes it
        except OSError as exc:
            raise self._error(exc) from exc

    def write(self, data: str | bytes) -> None:
        try:
            self.handle.write(data)
        except OSError as exc:
            raise self._error(exc) from exc

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self.handle.close()
            self.temp.replace(self.path)
        except OSError as error:
            self._discard()
            raise self._error(error) from error

    def _discard(self) -> None:
        with contextlib.suppress(OSError):  # the error that got us here is the one to report
            self.handle.close()
        self.temp.unlink(missing_ok=True)

    def _error(self, exc: OSError) -> NmtError:
        return NmtError(f"{self.path}: cannot write {self.what}: {exc.strerror or exc}")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename (:class:`AtomicOutput`): all there or not at
    all."""
    with AtomicOutput(path, "output") as out:
        out.write(text)


def _require_attention(hypothesis: Hypothesis) -> torch.Tensor:
    if hypothesis.attention is None:
        raise ValueError("attention_records needs translations made with attention=True")
    return hypothesis.attention


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
                "attention": _require_attention(best).float().cpu(),
            }
        )
    return records


FIRST_PIPE_CHUNK = 16  # lines of the first chunk translated for a pipe
PIPE_CLOSED_STATUS = 128 + 13  # a shell's status for a process that SIGPIPE (13) ended, as `yes | head` shows


def translate_file(cfg: TranslateConfig) -> None:
    """``scripts/translate.py``: translate ``cfg.input`` into ``cfg.output``, ``cfg.chunk_lines`` lines at a time.

    To a file, the output and the attention dump go through temp files renamed at the end: nothing is written
    on error. To stdout (``-``), each chunk is written and flushed as soon as it is translated; when the reader
    goes away (``| head``), translation stops quietly with :data:`PIPE_CLOSED_STATUS`.
    """
    from nmt.device import set_threads

    set_threads(cfg.threads)
    translator = Translator.from_config(cfg)
    try:
        _translate_chunks(translator, cfg)
    except BrokenPipeError:
        # Python flushes stdout once more at exit, which would fail again: let that go to /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(PIPE_CLOSED_STATUS) from None


def _translate_chunks(translator: Translator, cfg: TranslateConfig) -> None:
    from tqdm import tqdm

    with contextlib.ExitStack() as stack:
        write = (
            _write_stdout
            if cfg.output == STDIN
            else stack.enter_context(AtomicOutput(cfg.output, "output")).write
        )
        dump = None
        if cfg.dump_attention:
            dump = stack.enter_context(AtomicOutput(cfg.dump_attention, "the attention dump", binary=True))
            dump.write(MAGIC)
        show = cfg.progress and cfg.output != STDIN
        bar = stack.enter_context(
            tqdm(
                total=_line_count(cfg.input) if show else None,
                unit="line",
                file=sys.stderr,
                dynamic_ncols=True,
                disable=not show,
            )
        )
        numbered = read_lines(cfg.input, on_invalid=OnInvalid.replace)
        # To a pipe, start small so that its reader sees lines within a second or so, then grow to chunk_lines.
        first = min(FIRST_PIPE_CHUNK, cfg.chunk_lines) if cfg.output == STDIN else cfg.chunk_lines
        for first_line, lines in _chunks(numbered, cfg.chunk_lines, first):
            results = translator.translate(
                lines, cfg.search, on_batch=bar.update, first_line=first_line, attention=dump is not None
            )
            if dump is not None:
                dump.write(encode_chunk(attention_records(results, translator.tokenizer)))
            write(format_output(results, cfg.search.nbest, first_index=first_line - 1))
            bar.update(sum(not r.nbest for r in results))  # empty lines: no decoding batch counted them


def _chunks(numbered: Iterable[tuple[int, str]], size: int, first: int) -> Iterator[tuple[int, list[str]]]:
    """``(number of the first line, lines)`` for each run of consecutive lines, read as they are needed: ``first``
    lines, then twice as many each time up to ``size`` (the last run may be shorter)."""
    numbered = iter(numbered)
    length = first
    while chunk := list(itertools.islice(numbered, length)):
        yield chunk[0][0], [line for _, line in chunk]
        length = min(2 * length, size)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # a pipe's reader gets each chunk now, not when a buffer fills


def _line_count(path: str) -> int | None:
    """The lines :func:`nmt.lines.read_lines` will give for a plain file, by a quick pass over its bytes (the
    progress bar's total); None for stdin, a ``.gz`` file or a file that cannot be read (the reader says why)."""
    if path == STDIN or path.endswith(".gz"):
        return None
    count, last = 0, b"\n"
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    return count + (last != b"\n")
