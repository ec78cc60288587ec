"""Greedy and batched beam search over the model's decoding protocol.

Search knows the model only through ``encode`` -> ``init_decoder_state`` -> ``decode_step`` (see
:class:`DecodingModel`); ``EncoderOutput`` and ``DecoderState`` are opaque apart from ``index_select``. The
encoder output stays one row per sentence; the decoder state has one row per hypothesis (``beam`` consecutive
rows per sentence in beam search), so the beams of a sentence share its encoding instead of copying it.

Rules shared by both searches (one helper, :func:`_constrain`, applies them):

* PAD and BOS are never produced; UNK may be.
* ``max_len = floor(max_len_a * src_len + max_len_b)`` per sentence (``src_len`` as given in ``src_lengths``,
  clamped at 0) bounds ``len(tokens)``; at that length EOS is the only choice (this wins over ``min_len``).
* EOS is forbidden while ``len(tokens) < min_len`` -- unless no other token is allowed (``no_repeat_ngram``
  on a tiny vocabulary), so that every sentence always gets a hypothesis.
* ``no_repeat_ngram = n``: a token that would repeat an n-gram of the emitted tokens is forbidden (EOS never).
* Scores: ``log_prob`` is the sum of the model's log-probabilities of the tokens and EOS; the ranking score is
  ``log_prob / norm(length)`` with ``length = len(tokens) + 1`` (EOS counted) and ``norm`` = 1 (``none``),
  ``length`` (``average``) or ``((5 + length) / 6) ** alpha`` (``gnmt``, Wu et al., 2016).

Beam search keeps ``beam_size`` alive hypotheses per sentence, all sentences of the batch in one tensor
program (rows ``[n_alive_sentences * beam, ...]``). Each step ranks the ``2 * beam`` best extensions by
log-prob (all have the same length, so this is also the normalised order); an EOS extension ranked within
the first ``beam`` is finished and kept aside, and the ``beam`` best non-EOS extensions stay alive.

Stopping rule, per sentence: it is done when (a) ``beam_size`` hypotheses have finished, or (b) it has
``nbest`` finished hypotheses and no alive beam can still beat the ``nbest``-th of them, or (c) it reached its
maximum length, or (d) no alive beam has a finite score. (b) is exact: log-probs never increase, so an alive
beam with log-prob ``l <= 0`` can at best end with ``l / max(norm)`` over the lengths it can still reach; it
never changes the result, only stops early. (a) is the usual beam cap, and makes ``beam_size=1`` stop at the
first EOS, i.e. behave exactly like greedy search.

Done sentences leave the working set (``index_select`` on the encoder output's sentences and the state's
rows), so the batch shrinks as sentences finish; but not at once (:class:`_WorkingSet`). Dropping them copies
every sentence that stays, and a folded encoding is wide (``nmt.model.folded``): copying a sentence costs about
as much as one decoder step of one row. (The compiled step's encoding drops sentences from an index instead,
``FoldedEncoding.sentences``; dropping them at once measured no faster, so one rule serves every model.) So a
sentence that finishes stays in the batch, ignored, until the
row-steps spent on finished sentences since the last compaction reach the number of sentences still searching
(rent or buy: never more than about twice the cheaper of the two). The rows of a float model do not interact,
so a finished sentence carried along changes nothing for the others; an int8 model quantizes each step's
activations with one scale for the whole batch, so there, as with any change of batch, the numbers may move at
rounding level.

No history is copied while searching: each step writes its tokens, the beam each new beam extends, and the
attention weights into buffers allocated once per batch (``[batch, beam, max_len]``; the attention
``[batch, beam, max_len + 1, src_len]`` only when asked for), and the decoder state is reordered by one
``index_select``. The n-best are traced back through those pointers once, at the end, so the bookkeeping is
O(length) per sentence, not O(length^2). (``no_repeat_ngram`` still reorders a ``[rows, max_len]`` token buffer
at each step: its rule reads every alive beam's whole history anyway.)

Greedy search on the CPU chooses each step's token in compiled code (``nmt/csrc/greedy_choice.cpp``) when the
model also gives its step's logits (:class:`LogitsDecodingModel`) and no rule needs the history
(``no_repeat_ngram`` is 0): one visit to a row's logits finds their logsumexp and the largest allowed logit, where
the reference takes ``log_softmax``, the rules' writes, the add and the max, each a pass over ``[rows, vocab]``.
It applies the same rules to the same numbers, so it picks the same tokens, except where two logits are so close
that the reference's rounding makes them equal (then the reference takes the first); the log-probs agree to float
rounding. Elsewhere, and with ``compiled=False``, greedy search chooses from the log-probs: the reference, which
gives exactly what beam search gives with ``beam_size=1``.

The searches do not change the model's train/eval mode: call ``model.eval()`` first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from nmt.config import LengthNorm, SearchConfig
from nmt.native import load_extension
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID

NEG_INF = float("-inf")
# the tokens greedy search's compiled choice never takes: always, and before the minimum length
NEVER_CHOSEN = torch.tensor([PAD_ID, BOS_ID])
NOT_BEFORE_MIN_LEN = torch.tensor([PAD_ID, BOS_ID, EOS_ID])


class DecodingModel(Protocol):
    """What search needs of a model; encoder output and decoder state must have ``index_select(index)``.

    ``decode_step(prev_tokens [rows], state, enc)`` gets an ``enc`` of ``sentences`` rows and a state of
    ``rows = sentences * group`` rows, the ``group`` rows of a sentence consecutive (``group`` = 1 in greedy
    search, the beam size in beam search). The log-probs it returns are a new tensor: search writes its rules
    into it in place.
    """

    def encode(self, src: Tensor, src_lengths: Tensor) -> Any: ...

    def init_decoder_state(self, enc: Any) -> Any: ...

    def decode_step(self, prev_tokens: Tensor, state: Any, enc: Any) -> tuple[Tensor, Any, Tensor]: ...


@runtime_checkable
class LogitsDecodingModel(DecodingModel, Protocol):
    """A model that also gives its step's logits ``[rows, vocab]``, whose ``log_softmax`` is what ``decode_step``
    returns: greedy search chooses from them in compiled code (module docstring)."""

    def decode_step_logits(self, prev_tokens: Tensor, state: Any, enc: Any) -> tuple[Tensor, Any, Tensor]: ...


@functools.cache
def choice_extension() -> ModuleType | None:
    """Greedy search's compiled choice (``nmt/csrc/greedy_choice.cpp``), built on first call; None where it
    cannot be built."""
    return load_extension(
        "nmt_greedy_choice", "greedy_choice.cpp", "greedy search chooses from the log-probs"
    )


@dataclass
class Hypothesis:
    """One output sentence of the search."""

    tokens: list[int]  # without BOS/EOS
    score: float  # ranking score after length normalisation
    log_prob: float  # raw sum of token log-probs (incl. EOS)
    # [len(tokens)+1, src_len_of_this_sentence], row per output step incl. EOS; CPU. None when not requested.
    attention: Tensor | None


@dataclass
class _Finished:
    """Hypotheses finished at one step; their tokens and attention stay in the :class:`_History` until the end."""

    sentence: Tensor  # [m] index in the input batch
    beam: Tensor  # [m] the beam that emitted EOS (its history is that beam's after the previous step)
    step: int  # = len(tokens)
    log_prob: Tensor  # [m]
    score: Tensor  # [m]


class _History:
    """What every beam did at every step, written in place: no history is copied while searching.

    Indexed by ``[sentence of the input batch, beam, step]``, so sentences that leave the working set keep their
    records. ``tokens``/``parents``: the token beam k chose at step t and the beam (before step t's reordering)
    it extends; ``attention``: the weights of beam k's decoder step t (before the reordering). A hypothesis's
    tokens and attention are found once at the end by following ``parents`` back (:meth:`resolve`).
    """

    def __init__(self, n: int, beam: int, max_len: int, src_len: int, device: torch.device, attention: bool):
        self.tokens = torch.zeros(n, beam, max_len, dtype=torch.long, device=device)
        self.parents = torch.zeros(n, beam, max_len, dtype=torch.long, device=device)
        # uninitialised: every row a hypothesis reads was written; the rest is cut off in _collect
        self.attention = torch.empty(n, beam, max_len + 1, src_len, device=device) if attention else None

    def record_attention(self, sentence: Tensor, step: int, weights: Tensor) -> None:
        """``sentence`` ``[n]`` batch indices of the working rows, ``weights`` ``[n * beam, src_len]``."""
        if self.attention is not None:
            self.attention[sentence, :, step] = weights.float().view(sentence.numel(), -1, weights.size(-1))

    def record_step(self, sentence: Tensor, step: int, tokens: Tensor, parents: Tensor | None) -> None:
        """The beams after step ``step``: ``tokens`` and ``parents`` ``[n, beam]`` (None: beam 0 extends beam 0)."""
        self.tokens[sentence, :, step] = tokens
        if parents is not None:
            self.parents[sentence, :, step] = parents

    def resolve(
        self, sentence: list[int], beam: list[int], length: list[int]
    ) -> tuple[list[list[int]], Tensor | None]:
        """Hypotheses whose beam ``beam[i]`` emitted EOS at step ``length[i]``: their tokens, and their attention
        ``[m, max(length) + 1, src_len]`` on the CPU (rows past ``length[i]`` are padding; None if not recorded).
        """
        m, top = len(sentence), max(length, default=0)
        tokens, parents = self.tokens.cpu().numpy(), self.parents.cpu().numpy()
        sentence_np, length_np = np.asarray(sentence), np.asarray(length)
        row = np.zeros((m, top + 1), dtype=np.int64)  # the beam each hypothesis was on at each step
        out = np.zeros((m, top), dtype=np.int64)
        at = np.zeros(m, dtype=np.int64)
        for step in range(top, -1, -1):
            at = np.where(length_np == step, np.asarray(beam), at)  # hypotheses ending here start their walk
            row[:, step] = at
            if step > 0:
                out[:, step - 1] = tokens[sentence_np, at, step - 1]
                at = parents[sentence_np, at, step - 1]
        hyp_tokens = [out[i, : length[i]].tolist() for i in range(m)]
        if self.attention is None:
            return hyp_tokens, None
        device = self.attention.device
        steps = torch.arange(top + 1, device=device).unsqueeze(0)
        index = torch.from_numpy(sentence_np).to(device).unsqueeze(1), torch.from_numpy(row).to(device), steps
        return hyp_tokens, self.attention[index].cpu()


class _WorkingSet:
    """Which sentences of the working set still search, and when to drop the finished ones (module docstring).

    ``alive`` ``[n]`` bool (numpy, on the host: the step's one device sync already brings the flags there);
    ``rows_per_sentence``: 1 in greedy search, the beam size in beam search.
    """

    def __init__(self, n: int, rows_per_sentence: int) -> None:
        self.alive = np.ones(n, dtype=bool)
        self.rows_per_sentence = rows_per_sentence
        # rows of finished sentences stepped along since the last compaction, summed over the steps
        self.carried = 0

    def finish(self, done: np.ndarray) -> bool:
        """Sentences ``done`` ``[n]`` bool finished this step; True when none searches any more."""
        self.alive &= ~done
        return not self.alive.any()

    def compaction(self, device: torch.device) -> Tensor | None:
        """The working-set positions to keep, when it is time to drop the finished sentences; else None. Called
        once per step, before the next one."""
        finished, searching = int((~self.alive).sum()), int(self.alive.sum())
        self.carried += finished * self.rows_per_sentence
        if finished == 0 or self.carried < searching:
            return None
        keep = np.flatnonzero(self.alive)
        self.alive, self.carried = np.ones(keep.size, dtype=bool), 0
        return torch.from_numpy(keep).to(device)


def search(
    model: DecodingModel, src: Tensor, src_lengths: Tensor, cfg: SearchConfig, attention: bool = True
) -> list[list[Hypothesis]]:
    """Translate one batch: ``src`` ``[batch, src_len]`` (PAD-padded), ``src_lengths`` ``[batch]``.

    Returns per sentence the ``cfg.nbest`` best hypotheses, best first (greedy search when ``beam_size`` is 1),
    with their attention if ``attention`` (else ``Hypothesis.attention`` is None and none is kept).
    """
    with torch.inference_mode():
        if cfg.beam_size == 1:
            return greedy_search(model, src, src_lengths, cfg, attention)
        return beam_search(model, src, src_lengths, cfg, attention)


def max_output_lengths(src_lengths: Tensor, cfg: SearchConfig) -> Tensor:
    """``[batch]`` -> ``[batch]`` long, on ``src_lengths``' device: the most tokens (EOS excluded) per sentence."""
    # float64 on the CPU: exact for any length, and MPS has no float64
    limit = torch.floor(src_lengths.cpu().double() * cfg.max_len_a + cfg.max_len_b)
    return limit.clamp(min=0).long().to(src_lengths.device)


def length_norm(length: Tensor, cfg: SearchConfig) -> Tensor:
    """The divisor of the log-prob for hypotheses of ``length`` output tokens (EOS counted), same shape."""
    length = length.float()
    if cfg.length_norm == LengthNorm.gnmt:
        return ((5.0 + length) / 6.0) ** cfg.alpha
    if cfg.length_norm == LengthNorm.average:
        return length
    return torch.ones_like(length)


@torch.inference_mode()
def greedy_search(
    model: DecodingModel,
    src: Tensor,
    src_lengths: Tensor,
    cfg: SearchConfig,
    attention: bool = True,
    compiled: bool = True,
) -> list[list[Hypothesis]]:
    """The most probable next token at each step (``cfg.beam_size`` is ignored, ``nbest`` must be 1).

    ``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``; one hypothesis per sentence, with its attention
    if ``attention``. ``compiled``: choose in compiled code where it applies (module docstring); the reference,
    ``compiled=False`` or where it does not apply, gives exactly what :func:`beam_search` gives with
    ``beam_size=1``.
    """
    device = src.device
    # the model's logits step where the compiled choice applies (module docstring), decided once per batch
    step_logits = None
    if (
        compiled
        and not cfg.no_repeat_ngram
        and device.type == "cpu"
        and isinstance(model, LogitsDecodingModel)
        and choice_extension() is not None
    ):
        step_logits = model.decode_step_logits
    n = src.size(0)
    enc = model.encode(src, src_lengths)
    state = model.init_decoder_state(enc)
    max_lens = max_output_lengths(src_lengths, cfg).to(device)
    shortest = int(max_lens.min()) if n else 0
    history = _History(n, 1, int(max_lens.max()) if n else 0, src.size(1), device, attention)
    sentence = torch.arange(n, device=device)
    log_prob = torch.zeros(n, device=device)
    prev = torch.full((n,), BOS_ID, dtype=torch.long, device=device)
    working = _WorkingSet(n, rows_per_sentence=1)
    found: list[_Finished] = []
    step = 0
    while True:
        if step_logits is not None:
            logits, state, step_attention = step_logits(prev, state, enc)
            token, log_prob = _compiled_choice(logits, log_prob, step, max_lens, cfg)
        else:
            log_probs, state, step_attention = model.decode_step(prev, state, enc)
            emitted = history.tokens[sentence, 0, :step] if cfg.no_repeat_ngram else None
            token, log_prob = _reference_choice(log_probs, log_prob, emitted, step, max_lens, shortest, cfg)
        history.record_attention(sentence, step, step_attention)
        # EOS is forced at the maximum length, so this always ends
        done = (token == EOS_ID).cpu().numpy() & working.alive
        if done.any():
            ended = torch.from_numpy(np.flatnonzero(done)).to(device)
            length = torch.full((ended.numel(),), step + 1, device=device)
            found.append(
                _Finished(
                    sentence=sentence[ended],
                    beam=torch.zeros_like(ended),
                    step=step,
                    log_prob=log_prob[ended],
                    score=log_prob[ended] / length_norm(length, cfg),
                )
            )
            if working.finish(done):
                break
        live = working.compaction(device)
        if live is not None:
            enc, state = enc.index_select(live), state.index_select(live)
            sentence, log_prob, token, max_lens = sentence[live], log_prob[live], token[live], max_lens[live]
            shortest = int(max_lens.min())
        history.record_step(sentence, step, token.unsqueeze(1), None)
        prev = token
        step += 1
    return _collect(found, history, src_lengths, n, nbest=1)


def _reference_choice(
    log_probs: Tensor,
    log_prob: Tensor,
    emitted: Tensor | None,
    step: int,
    max_lens: Tensor,
    shortest: int,
    cfg: SearchConfig,
) -> tuple[Tensor, Tensor]:
    """Greedy search's next tokens ``[rows]`` and extended log-probs ``[rows]`` from the model's ``log_probs``
    ``[rows, vocab]`` (changed in place), the running ``log_prob`` ``[rows]`` and the rules' arguments
    (:func:`_constrain`)."""
    log_probs = _constrain(log_probs, emitted, step, max_lens, shortest, cfg)
    # the same sum as beam search ranks, so both pick the same token and accumulate the same float
    log_prob, token = log_probs.add_(log_prob.unsqueeze(1)).max(dim=1)
    return token, log_prob


def _compiled_choice(
    logits: Tensor, log_prob: Tensor, step: int, max_lens: Tensor, cfg: SearchConfig
) -> tuple[Tensor, Tensor]:
    """:func:`_reference_choice` from the model's ``logits`` ``[rows, vocab]``, in compiled code (module docstring):
    the rules without ``no_repeat_ngram``, which needs the history."""
    extension = choice_extension()
    assert extension is not None, "the compiled choice needs its extension: check choice_extension() first"
    forbidden = NOT_BEFORE_MIN_LEN if step < cfg.min_len else NEVER_CHOSEN
    return extension.greedy_choice(logits.float().contiguous(), log_prob, max_lens, step, EOS_ID, forbidden)


@torch.inference_mode()
def beam_search(
    model: DecodingModel, src: Tensor, src_lengths: Tensor, cfg: SearchConfig, attention: bool = True
) -> list[list[Hypothesis]]:
    """Batched beam search (see the module docstring for the rules and the stopping rule).

    ``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``; per sentence up to ``cfg.nbest`` distinct
    hypotheses, best score first, with their attention if ``attention``.
    """
    beam, nbest = cfg.beam_size, cfg.nbest
    device = src.device
    n = src.size(0)
    enc = model.encode(src, src_lengths)
    state = model.init_decoder_state(enc)
    # the state gets a row per beam, sentence-major ([n * beam]); enc keeps one row per sentence
    state = state.index_select(torch.arange(n, device=device).repeat_interleave(beam))
    max_lens = max_output_lengths(src_lengths, cfg).to(device)
    longest, shortest = (int(max_lens.max()), int(max_lens.min())) if n else (0, 0)
    history = _History(n, beam, longest, src.size(1), device, attention)
    # the n-gram rule reads whole histories, so it keeps the alive beams' tokens row by row
    emitted = torch.zeros(n * beam, longest, dtype=torch.long, device=device) if cfg.no_repeat_ngram else None
    sentence = torch.arange(n, device=device)
    scores = torch.full((n, beam), NEG_INF, device=device)
    # one live beam at the start, else the first step would pick the same token `beam` times
    scores[:, 0] = 0.0
    row_max_lens = max_lens.repeat_interleave(beam)
    prev = torch.full((n * beam,), BOS_ID, dtype=torch.long, device=device)
    n_finished = torch.zeros(n, dtype=torch.long, device=device)
    kept = torch.full((n, nbest), NEG_INF, device=device)  # best finished scores so far, best first
    working = _WorkingSet(n, rows_per_sentence=beam)
    searching = torch.ones(n, dtype=torch.bool, device=device)  # working.alive on the device
    found: list[_Finished] = []
    step = 0
    while True:
        log_probs, state, step_attention = model.decode_step(prev, state, enc)
        history.record_attention(sentence, step, step_attention)
        vocab = log_probs.size(-1)
        log_probs = _constrain(
            log_probs, None if emitted is None else emitted[:, :step], step, row_max_lens, shortest, cfg
        ).view(n, beam, vocab)
        candidates = log_probs.add_(scores.unsqueeze(2)).view(n, beam * vocab)
        top_scores, top_index = candidates.topk(min(2 * beam, beam * vocab), dim=1)  # [n, 2*beam]
        origin, token = top_index // vocab, top_index % vocab
        is_eos = token == EOS_ID
        rank = torch.arange(top_index.size(1), device=device)
        final = is_eos & (rank < beam) & torch.isfinite(top_scores) & searching.unsqueeze(1)
        final_scores = top_scores / length_norm(torch.tensor(step + 1.0, device=device), cfg)
        final_scores = final_scores.masked_fill(~final, NEG_INF)
        kept = torch.cat([kept, final_scores], dim=1).topk(nbest, dim=1).values
        n_finished = n_finished + final.sum(dim=1)

        # the `beam` best non-EOS extensions continue (at most `beam` candidates are EOS, one per beam)
        order = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :beam]
        origin, token, scores = origin.gather(1, order), token.gather(1, order), top_scores.gather(1, order)

        # (b): an alive beam ends at a length in [step + 2, max_len + 1]; norm is monotone in the length
        best_norm = torch.maximum(
            length_norm(torch.full_like(max_lens, step + 2), cfg), length_norm(max_lens + 1, cfg)
        )
        bound = (scores / best_norm.unsqueeze(1)).max(dim=1).values  # -inf when no beam is alive
        done = (
            (n_finished >= beam)
            | ((n_finished >= nbest) & (kept[:, -1] >= bound))
            | (step >= max_lens)
            | (bound == NEG_INF)
            | ~searching
        )
        flags = torch.cat([done, final.flatten()]).cpu().numpy()  # the step's one device sync
        done_np, final_np = flags[:n], flags[n:].reshape(n, -1)
        if final_np.any():
            row_np, col_np = np.nonzero(final_np)
            row, col = torch.from_numpy(row_np).to(device), torch.from_numpy(col_np).to(device)
            found.append(
                _Finished(
                    sentence=sentence[row],
                    beam=top_index[row, col] // vocab,
                    step=step,
                    log_prob=top_scores[row, col],
                    score=final_scores[row, col],
                )
            )
        if working.finish(done_np):
            break
        searching = ~done  # working.alive: `done` counts the sentences that finished before as done too

        # [n, beam] state rows the new beams extend
        reorder = torch.arange(n, device=device).unsqueeze(1) * beam + origin
        live = working.compaction(device)
        if live is not None:
            origin, token, scores, reorder = origin[live], token[live], scores[live], reorder[live]
            sentence, max_lens, searching = sentence[live], max_lens[live], searching[live]
            n_finished, kept = n_finished[live], kept[live]
            enc, row_max_lens = enc.index_select(live), max_lens.repeat_interleave(beam)
            n, shortest = live.numel(), int(max_lens.min())
        history.record_step(sentence, step, token, origin)
        state = state.index_select(reorder.flatten())
        prev = token.flatten()
        if emitted is not None:
            emitted = emitted.index_select(0, reorder.flatten())
            emitted[:, step] = prev
        step += 1
    return _collect(found, history, src_lengths, src.size(0), nbest)


def _constrain(
    log_probs: Tensor, history: Tensor | None, step: int, max_lens: Tensor, shortest: int, cfg: SearchConfig
) -> Tensor:
    """Forbidden next tokens set to -inf.

    ``log_probs`` ``[rows, vocab]``, the model's new tensor, changed in place when it is float32; ``history``
    ``[rows, step]`` tokens emitted so far (no BOS), needed only for ``no_repeat_ngram`` (None without it);
    ``max_lens`` ``[rows]``, and ``shortest`` its minimum, known on the host so that no pass over ``[rows,
    vocab]`` is spent while no row is at its maximum. Returns float32 ``[rows, vocab]``.
    """
    log_probs = log_probs.float()
    eos = log_probs[:, EOS_ID].clone()
    log_probs[:, PAD_ID] = NEG_INF
    log_probs[:, BOS_ID] = NEG_INF
    if cfg.no_repeat_ngram and step >= cfg.no_repeat_ngram:
        assert history is not None, "no_repeat_ngram needs the emitted tokens"
        log_probs.masked_fill_(
            _repeated_ngram_tokens(history, cfg.no_repeat_ngram, log_probs.size(1)), NEG_INF
        )
    if step < cfg.min_len:
        log_probs[:, EOS_ID] = NEG_INF
        stuck = ~torch.isfinite(log_probs).any(dim=1)
        log_probs[:, EOS_ID] = torch.where(stuck, eos, log_probs[:, EOS_ID])
    if step >= shortest:
        at_max = (step >= max_lens).unsqueeze(1)
        log_probs.masked_fill_(at_max, NEG_INF)
        log_probs[:, EOS_ID] = torch.where(at_max.squeeze(1), eos, log_probs[:, EOS_ID])
    return log_probs


def _repeated_ngram_tokens(history: Tensor, n: int, vocab: int) -> Tensor:
    """``[rows, vocab]`` bool: tokens that would complete an n-gram already in ``history`` ``[rows, t]``.

    The last n-1 tokens are compared with every earlier (n-1)-gram; the token that followed a match is banned.
    """
    t, prefix = history.size(1), n - 1
    followers = history[:, prefix:]  # [rows, t - prefix]: the token after each earlier (n-1)-gram
    if prefix == 0:
        match = torch.ones_like(followers, dtype=torch.bool)
    else:
        earlier = history[:, : t - 1].unfold(1, prefix, 1)  # [rows, t - prefix, prefix]
        match = (earlier == history[:, t - prefix :].unsqueeze(1)).all(dim=2)
    hits = torch.zeros(history.size(0), vocab, dtype=torch.long, device=history.device)
    return hits.scatter_add_(1, followers, match.long()) > 0


def _collect(
    found: list[_Finished], history: _History, src_lengths: Tensor, n: int, nbest: int
) -> list[list[Hypothesis]]:
    """Finished hypotheses -> per sentence the ``nbest`` best (stable: earlier-found first on ties)."""
    per_sentence: list[list[tuple[float, float, int, int]]] = [[] for _ in range(n)]
    for chunk in found:
        for s, beam, log_prob, score in zip(
            chunk.sentence.tolist(), chunk.beam.tolist(), chunk.log_prob.tolist(), chunk.score.tolist()
        ):
            per_sentence[s].append((score, log_prob, beam, chunk.step))
    best = [(s, h) for s, hyps in enumerate(per_sentence) for h in sorted(hyps, key=lambda h: -h[0])[:nbest]]
    tokens, attention = history.resolve(
        [s for s, _ in best], [h[2] for _, h in best], [h[3] for _, h in best]
    )
    lengths = src_lengths.tolist()
    results: list[list[Hypothesis]] = [[] for _ in range(n)]
    for i, (s, (score, log_prob, _, step)) in enumerate(best):
        att = None if attention is None else attention[i, : step + 1, : lengths[s]].clone()
        results[s].append(Hypothesis(tokens=tokens[i], score=score, log_prob=log_prob, attention=att))
    return results
