"""The training loops over time compiled, forward and backward (``nmt/csrc/rnn_loops.cpp``).

``Decoder._bahdanau_teacher_forced`` and ``_luong_teacher_forced`` run their loops in Python: about 20 small
operations per target position, each recorded by autograd, so at training's batch of ~40 sentences much of the
loop's time is spent issuing operations, not computing them; the encoder's ``torch.gru`` runs its forward loop in
C++, but autograd records every step of it for the backward. The C++ source runs the same operations without a
graph, for a one-layer GRU decoder with additive attention and for the encoder's bidirectional GRU layers: each
forward saves what its backward needs in ``[len, ...]`` buffers, each backward runs the positions in reverse
and computes every weight gradient as one product over all positions after the loop (the order cuDNN uses).
:class:`BahdanauGruLoop`, :class:`LuongGruLoop` and :class:`BiGruLoop` put each pair behind autograd.

The source is compiled on first use (``nmt.native``: a C++ compiler and ninja, under a minute the first time,
cached after). Where it cannot be built :func:`loops_extension` returns None and says why once, and the model
keeps its Python loops, which stay the reference: the tests check these functions against them in float64.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from nmt.native import load_extension


@functools.cache
def loops_extension() -> ModuleType | None:
    """The compiled loops (``nmt/csrc/rnn_loops.cpp``), built on first call; None where they cannot be built.
    The same extension holds search's compiled attention step (``nmt.model.folded``)."""
    return load_extension("nmt_rnn_loops", "rnn_loops.cpp", "training uses the Python loops")


def _extension() -> ModuleType:
    extension = loops_extension()
    assert extension is not None, "the compiled loops need the extension: check loops_extension() first"
    return extension


def outside_compiled(x: Tensor) -> bool:
    """Whether a batch (any of its float tensors ``x``) is outside the compiled loops, which run float32 and
    float64 on the CPU: on another device, in another float type, or under autocast."""
    return (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or torch.is_autocast_enabled("cpu")
    )


def _contiguous(grad: Tensor | None) -> Tensor | None:
    return None if grad is None else grad.contiguous()


# The inputs each backward needs besides the forward's results, by position: s_0, keys, annotations, 2 W_q, 2 v and
# the cell's weights (not G, the padding or the biases); the Luong loop also W_o and the dropout masks.
BAHDANAU_KEPT = (1, 2, 3, 5, 6, 7, 8)
LUONG_KEPT = (1, 2, 3, 5, 6, 7, 8, 10, 12)


class BahdanauGruLoop(torch.autograd.Function):
    """``Decoder._bahdanau_teacher_forced``'s loop, time-major: attend with s_{t-1}, then the GRU cell.

    Inputs: ``gates_in`` G ``[tgt_len, batch, 3*hidden]`` (W_e E y + b_ih per position), ``state`` s_0
    ``[batch, hidden]``, ``keys`` 2 (U h + b) ``[batch, src_len, attention]``, ``values`` h ``[batch, src_len,
    annotation]``, ``padding`` ``[batch, src_len]`` bool (True on padding), ``query_weight`` 2 W_q ``[attention,
    hidden]``, ``energy_weight`` 2 v ``[attention]``, ``context_weight`` W_c ``[3*hidden, annotation]`` (the
    cell's context columns), ``weight_hh`` ``[3*hidden, hidden]``, ``bias_hh`` ``[3*hidden]``.

    Returns the states s_t ``[tgt_len, batch, hidden]``, contexts c_t ``[tgt_len, batch, annotation]`` and
    attention weights ``[tgt_len, batch, src_len]``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        results = _extension().bahdanau_forward(*inputs)  # states, contexts, weights, then the activations
        ctx.save_for_backward(*(inputs[i] for i in BAHDANAU_KEPT), *results)
        return results[0], results[1], results[2]

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        kept, results = ctx.saved_tensors[: len(BAHDANAU_KEPT)], ctx.saved_tensors[len(BAHDANAU_KEPT) :]
        grad_states, grad_contexts, grad_weights = (_contiguous(grad) for grad in grads)
        grad_inputs = _extension().bahdanau_backward(
            torch.zeros_like(results[0]) if grad_states is None else grad_states,
            torch.zeros_like(results[1]) if grad_contexts is None else grad_contexts,
            grad_weights,
            *kept,
            *results,
        )
        return (*grad_inputs[:4], None, *grad_inputs[4:])  # no gradient for the padding


class LuongGruLoop(torch.autograd.Function):
    """``Decoder._luong_teacher_forced``'s loop, time-major: the GRU cell on [E y; h~_{t-1}], attend with s_t,
    then h~_t = tanh(W_o dropout([s_t; c_t]) + b_o), fed back.

    Inputs: ``gates_in``, ``state``, ``keys``, ``values``, ``padding``, ``query_weight``, ``energy_weight`` as
    :class:`BahdanauGruLoop`; ``feed_weight`` W_f ``[3*hidden, hidden]`` (the cell's h~ columns), ``weight_hh``,
    ``bias_hh``; ``output_weight`` W_o ``[hidden, hidden + annotation]``, ``output_bias`` b_o ``[hidden]``;
    ``masks`` ``[tgt_len, batch, hidden + annotation]``, dropout's scaled keep masks, or None for no dropout.

    Returns h~_t ``[tgt_len, batch, hidden]`` and the attention weights ``[tgt_len, batch, src_len]``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, *inputs: Tensor | None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        results = _extension().luong_forward(*inputs)  # outputs, weights, then the activations
        ctx.save_for_backward(*(inputs[i] for i in LUONG_KEPT), *results)
        return results[0], results[1]

    @staticmethod
    def backward(ctx: FunctionCtx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        kept, results = ctx.saved_tensors[: len(LUONG_KEPT)], ctx.saved_tensors[len(LUONG_KEPT) :]
        grad_outputs, grad_weights = (_contiguous(grad) for grad in grads)
        grad_inputs = _extension().luong_backward(
            torch.zeros_like(results[0]) if grad_outputs is None else grad_outputs,
            grad_weights,
            *kept,
            *results,
        )
        return (*grad_inputs[:4], None, *grad_inputs[4:], None)  # none for the padding and the masks


class BiGruLoop(torch.autograd.Function):
    """Both directions of one bidirectional GRU layer stepped together from zero states, time-major (the
    encoder reverses its backward direction's input first, so both read position t at step t).

    Inputs: ``gates_in`` ``[src_len, 2, batch, 3*hidden]`` (W_ih x + b_ih of each direction), ``weight_hh``
    ``[2, 3*hidden, hidden]``, ``bias_hh`` ``[2, 3*hidden]``. Returns the states ``[src_len, 2, batch, hidden]``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, gates_in: Tensor, weight_hh: Tensor, bias_hh: Tensor) -> Tensor:  # type: ignore[override]
        results = _extension().bigru_forward(gates_in, weight_hh, bias_hh)  # states, then the activations
        ctx.save_for_backward(weight_hh, *results)
        return results[0]

    @staticmethod
    def backward(ctx: FunctionCtx, grad_states: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        weight_hh, *results = ctx.saved_tensors
        return tuple(_extension().bigru_backward(grad_states.contiguous(), weight_hh, *results))
