"""Greedy and batched beam search over the model's decoding protocol.

Search knows the model only through ``encode`` -> ``init_decoder_state`` -> ``decode_step`` (see
:class:`DecodingModel`); ``EncoderOutput`` and ``DecoderState`` are opaque apart from ``index_select``.

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
first EOS, i.e. behave exactly like greedy search. Done sentences leave the working set (``index_select``
on the encoder output and the state), so the batch shrinks as sentences finish.

The searches do not change the model's train/eval mode: call ``model.eval()`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from nmt.config import LengthNorm, SearchConfig
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID

NEG_INF = float("-inf")


class DecodingModel(Protocol):
    """What search needs of a model; encoder output and decoder state must have ``index_select(index)``."""

    def encode(self, src: Tensor, src_lengths: Tensor) -> Any: ...

    def init_decoder_state(self, enc: Any) -> Any: ...

    def decode_step(self, prev_tokens: Tensor, state: Any, enc: Any) -> tuple[Tensor, Any, Tensor]: ...


@dataclass
class Hypothesis:
    """One output sentence of the search."""

    tokens: list[int]  # without BOS/EOS
    score: float  # ranking score after length normalisation
    log_prob: float  # raw sum of token log-probs (incl. EOS)
    attention: Tensor  # [len(tokens)+1, src_len_of_this_sentence], row per output step incl. EOS; CPU


@dataclass
class _Finished:
    """Hypotheses finished at one step (device tensors, moved to the CPU once at the end)."""

    sentence: Tensor  # [m] index in the input batch
    tokens: Tensor  # [m, step]
    attention: Tensor  # [m, step+1, src_len]
    log_prob: Tensor  # [m]
    score: Tensor  # [m]


def search(
    model: DecodingModel, src: Tensor, src_lengths: Tensor, cfg: SearchConfig
) -> list[list[Hypothesis]]:
    """Translate one batch: ``src`` ``[batch, src_len]`` (PAD-padded), ``src_lengths`` ``[batch]``.

    Returns per sentence the ``cfg.nbest`` best hypotheses, best first (greedy search when ``beam_size`` is 1).
    """
    with torch.inference_mode():
        if cfg.beam_size == 1:
            return greedy_search(model, src, src_lengths, cfg)
        return beam_search(model, src, src_lengths, cfg)


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
    model: DecodingModel, src: Tensor, src_lengths: Tensor, cfg: SearchConfig
) -> list[list[Hypothesis]]:
    """The most probable next token at each step (``cfg.beam_size`` is ignored, ``nbest`` must be 1).

    ``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``; one hypothesis per sentence. Gives exactly what
    :func:`beam_search` gives with ``beam_size=1``.
    """
    device = src.device
    n = src.size(0)
    enc = model.encode(src, src_lengths)
    state = model.init_decoder_state(enc)
    max_lens = max_output_lengths(src_lengths, cfg).to(device)
    sentence = torch.arange(n, device=device)
    tokens = torch.zeros(n, 0, dtype=torch.long, device=device)
    attention = torch.zeros(n, 0, src.size(1), device=device)
    log_prob = torch.zeros(n, device=device)
    prev = torch.full((n,), BOS_ID, dtype=torch.long, device=device)
    found: list[_Finished] = []
    step = 0
    while True:
        log_probs, state, step_attention = model.decode_step(prev, state, enc)
        log_probs = _constrain(log_probs, tokens, step, max_lens, cfg)
        # the same sum as beam search ranks, so both pick the same token and accumulate the same float
        log_prob, token = (log_prob.unsqueeze(1) + log_probs).max(dim=1)
        attention = torch.cat([attention, step_attention.float().unsqueeze(1)], dim=1)
        done = (token == EOS_ID).cpu().numpy()  # EOS is forced at the maximum length, so this always ends
        if done.any():
            ended = torch.from_numpy(np.flatnonzero(done)).to(device)
            length = torch.full((ended.numel(),), step + 1, device=device)
            found.append(
                _Finished(
                    sentence=sentence[ended],
                    tokens=tokens[ended],
                    attention=attention[ended],
                    log_prob=log_prob[ended],
                    score=log_prob[ended] / length_norm(length, cfg),
                )
            )
            if done.all():
                break
            live = torch.from_numpy(np.flatnonzero(~done)).to(device)
            enc, state = enc.index_select(live), state.index_select(live)
            sentence, tokens, attention = sentence[live], tokens[live], attention[live]
            log_prob, token, max_lens = log_prob[live], token[live], max_lens[live]
        tokens = torch.cat([tokens, token.unsqueeze(1)], dim=1)
        prev = token
        step += 1
    return _collect(found, src_lengths, n, nbest=1)


@torch.inference_mode()
def beam_search(
    model: DecodingModel, src: Tensor, src_lengths: Tensor, cfg: SearchConfig
) -> list[list[Hypothesis]]:
    """Batched beam search (see the module docstring for the rules and the stopping rule).

    ``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``; per sentence up to ``cfg.nbest`` distinct
    hypotheses, best score first.
    """
    beam, nbest = cfg.beam_size, cfg.nbest
    device = src.device
    n = src.size(0)
    enc = model.encode(src, src_lengths)
    state = model.init_decoder_state(enc)
    rows = torch.arange(n, device=device).repeat_interleave(beam)
    enc, state = enc.index_select(rows), state.index_select(rows)  # rows [n * beam], sentence-major
    max_lens = max_output_lengths(src_lengths, cfg).to(device)
    sentence = torch.arange(n, device=device)
    scores = torch.full((n, beam), NEG_INF, device=device)
    # one live beam at the start, else the first step would pick the same token `beam` times
    scores[:, 0] = 0.0
    tokens = torch.zeros(n, beam, 0, dtype=torch.long, device=device)
    attention = torch.zeros(n, beam, 0, src.size(1), device=device)
    prev = torch.full((n * beam,), BOS_ID, dtype=torch.long, device=device)
    n_finished = torch.zeros(n, dtype=torch.long, device=device)
    kept = torch.full((n, nbest), NEG_INF, device=device)  # best finished scores so far, best first
    found: list[_Finished] = []
    step = 0
    while True:
        log_probs, state, step_attention = model.decode_step(prev, state, enc)
        vocab = log_probs.size(-1)
        log_probs = _constrain(
            log_probs, tokens.flatten(0, 1), step, max_lens.repeat_interleave(beam), cfg
        ).view(n, beam, vocab)
        step_attention = step_attention.float().view(n, beam, -1)
        candidates = (scores.unsqueeze(2) + log_probs).view(n, beam * vocab)
        top_scores, top_index = candidates.topk(min(2 * beam, beam * vocab), dim=1)  # [n, 2*beam]
        origin, token = top_index // vocab, top_index % vocab
        is_eos = token == EOS_ID
        rank = torch.arange(top_index.size(1), device=device)
        final = is_eos & (rank < beam) & torch.isfinite(top_scores)
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
        )
        flags = torch.cat([done, final.flatten()]).cpu().numpy()  # the step's one device sync
        done_np, final_np = flags[:n], flags[n:].reshape(n, -1)
        if final_np.any():
            row_np, col_np = np.nonzero(final_np)
            row, col = torch.from_numpy(row_np).to(device), torch.from_numpy(col_np).to(device)
            beam_of = top_index[row, col] // vocab
            found.append(
                _Finished(
                    sentence=sentence[row],
                    tokens=tokens[row, beam_of],
                    attention=torch.cat(
                        [attention[row, beam_of], step_attention[row, beam_of].unsqueeze(1)], dim=1
                    ),
                    log_prob=top_scores[row, col],
                    score=final_scores[row, col],
                )
            )
        if done_np.all():
            break

        batch_rows = torch.arange(n, device=device).unsqueeze(1)
        tokens = torch.cat([tokens[batch_rows, origin], token.unsqueeze(2)], dim=2)
        attention = torch.cat(
            [attention[batch_rows, origin], step_attention[batch_rows, origin].unsqueeze(2)], dim=2
        )
        reorder = batch_rows * beam + origin  # [n, beam] state rows the new beams extend
        if done_np.any():
            live = torch.from_numpy(np.flatnonzero(~done_np)).to(device)
            tokens, attention, scores, reorder = tokens[live], attention[live], scores[live], reorder[live]
            sentence, max_lens = sentence[live], max_lens[live]
            n_finished, kept = n_finished[live], kept[live]
            enc = enc.index_select((live.unsqueeze(1) * beam + torch.arange(beam, device=device)).flatten())
            n = live.numel()
        state = state.index_select(reorder.flatten())
        prev = tokens[:, :, -1].flatten()
        step += 1
    return _collect(found, src_lengths, src.size(0), nbest)


def _constrain(log_probs: Tensor, history: Tensor, step: int, max_lens: Tensor, cfg: SearchConfig) -> Tensor:
    """Forbidden next tokens set to -inf.

    ``log_probs`` ``[rows, vocab]``; ``history`` ``[rows, step]`` tokens emitted so far (no BOS);
    ``max_lens`` ``[rows]``. Returns a new float32 ``[rows, vocab]``.
    """
    log_probs = log_probs.float().clone()
    eos = log_probs[:, EOS_ID].clone()
    log_probs[:, PAD_ID] = NEG_INF
    log_probs[:, BOS_ID] = NEG_INF
    if cfg.no_repeat_ngram and step >= cfg.no_repeat_ngram:
        log_probs.masked_fill_(
            _repeated_ngram_tokens(history, cfg.no_repeat_ngram, log_probs.size(1)), NEG_INF
        )
    if step < cfg.min_len:
        log_probs[:, EOS_ID] = NEG_INF
        stuck = ~torch.isfinite(log_probs).any(dim=1)
        log_probs[:, EOS_ID] = torch.where(stuck, eos, log_probs[:, EOS_ID])
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


def _collect(found: list[_Finished], src_lengths: Tensor, n: int, nbest: int) -> list[list[Hypothesis]]:
    """Finished hypotheses -> per sentence the ``nbest`` best (stable: earlier-found first on ties)."""
    lengths = src_lengths.tolist()
    per_sentence: list[list[tuple[float, float, list[int], Tensor]]] = [[] for _ in range(n)]
    for chunk in found:
        attention = chunk.attention.cpu()
        for s, toks, log_prob, score, att in zip(
            chunk.sentence.tolist(),
            chunk.tokens.tolist(),
            chunk.log_prob.tolist(),
            chunk.score.tolist(),
            attention,
        ):
            per_sentence[s].append((score, log_prob, toks, att))
    return [
        [
            Hypothesis(tokens=toks, score=score, log_prob=log_prob, attention=att[:, : lengths[s]].clone())
            for score, log_prob, toks, att in sorted(hyps, key=lambda h: -h[0])[:nbest]
        ]
        for s, hyps in enumerate(per_sentence)
    ]
