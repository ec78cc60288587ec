"""Decoder: bridge, the two step orders, tied output, one output projection per forward."""

import pytest
import torch

from nmt.config import AttentionType, DecoderStep, ModelConfig, RnnType
from nmt.errors import NmtError
from nmt.model.decoder import Decoder
from nmt.model.state import EncoderOutput

VOCAB, SRC_LEN, BATCH = 17, 5, 3


def _cfg(**overrides) -> ModelConfig:
    base = {"emb_size": 6, "hidden_size": 6, "enc_hidden_size": 6, "attention_size": 5, "dropout": 0.0}
    return ModelConfig(**{**base, **overrides})


def _decoder(cfg: ModelConfig) -> Decoder:
    torch.manual_seed(0)
    return Decoder(cfg, VOCAB).eval()


def _enc(cfg: ModelConfig, decoder: Decoder) -> EncoderOutput:
    """A fixed encoded batch, in the decoder's dtype."""
    gen = torch.Generator().manual_seed(1)
    dtype = decoder.pre_output.weight.dtype
    ann = 2 * cfg.hidden_size
    states = torch.randn(BATCH, SRC_LEN, ann, generator=gen).to(dtype)
    mask = torch.arange(SRC_LEN).unsqueeze(0) < torch.tensor([5, 2, 4]).unsqueeze(1)
    states = states * mask.unsqueeze(-1)
    hidden = torch.randn(cfg.enc_layers, BATCH, ann, generator=gen).to(dtype)
    cell = (
        torch.randn(cfg.enc_layers, BATCH, ann, generator=gen).to(dtype)
        if cfg.rnn_type == RnnType.lstm
        else None
    )
    return EncoderOutput(states, mask, decoder.attention.project_keys(states), hidden, cell)


@pytest.mark.parametrize(
    ("enc_layers", "dec_layers", "expected"), [(1, 1, [0]), (2, 1, [1]), (1, 2, [0, 0]), (3, 2, [1, 2])]
)
def test_bridge_aligns_top_layers(enc_layers: int, dec_layers: int, expected: list[int]) -> None:
    cfg = _cfg(enc_layers=enc_layers, dec_layers=dec_layers)
    decoder = _decoder(cfg)
    assert decoder.bridge_from == expected
    state = decoder.init_state(_enc(cfg, decoder))
    assert state.hidden.shape == (dec_layers, BATCH, 6)


@pytest.mark.parametrize("rnn_type", list(RnnType))
def test_bridge_formula(rnn_type: RnnType) -> None:
    cfg = _cfg(rnn_type=rnn_type, enc_layers=2, dec_layers=2)
    decoder = _decoder(cfg)
    enc = _enc(cfg, decoder)
    state = decoder.init_state(enc)
    for layer in range(2):
        bridge = decoder.bridge[layer]
        torch.testing.assert_close(state.hidden[layer], torch.tanh(bridge(enc.hidden[layer])))
    if rnn_type == RnnType.lstm:
        torch.testing.assert_close(state.cell[1], torch.tanh(decoder.cell_bridge[1](enc.cell[1])))
    else:
        assert state.cell is None
    assert state.input_feed is None  # Bahdanau step


@pytest.mark.parametrize("rnn_type", list(RnnType))
def test_no_bridge_starts_from_zeros(rnn_type: RnnType) -> None:
    cfg = _cfg(rnn_type=rnn_type, bridge=False, decoder_step=DecoderStep.luong, dec_layers=2)
    decoder = _decoder(cfg)
    assert decoder.bridge is None and decoder.cell_bridge is None
    state = decoder.init_state(_enc(cfg, decoder))
    assert (state.hidden == 0).all() and state.hidden.shape == (2, BATCH, 6)
    assert (state.input_feed == 0).all() and state.input_feed.shape == (BATCH, 6)
    if rnn_type == RnnType.lstm:
        assert (state.cell == 0).all()


@pytest.mark.parametrize("attention", list(AttentionType))
def test_bahdanau_step_attends_with_the_previous_state(attention: AttentionType) -> None:
    cfg = _cfg(attention=attention, decoder_step=DecoderStep.bahdanau, dec_layers=2)
    decoder = _decoder(cfg)
    enc = _enc(cfg, decoder)
    state = decoder.init_state(enc)
    emb = decoder.embed(torch.tensor([4, 5, 6]))
    pre, new_state, weights = decoder.step(emb, state, enc)
    context, expected = decoder.attention(state.hidden[-1], enc.keys, enc.states, enc.mask)
    torch.testing.assert_close(weights, expected)
    # s_i = RNN([E y; c_i], s_{i-1}); t_i = tanh(W_o [E y; s_i; c_i] + b_o)
    s_bottom = decoder.cells[0](torch.cat([emb, context], -1), state.hidden[0])
    torch.testing.assert_close(new_state.hidden[0], s_bottom)
    s_top = new_state.hidden[1]
    torch.testing.assert_close(pre, torch.tanh(decoder.pre_output(torch.cat([emb, s_top, context], -1))))
    assert pre.shape == (BATCH, 6) and new_state.input_feed is None


@pytest.mark.parametrize("attention", list(AttentionType))
def test_luong_step_attends_with_the_new_state_and_feeds_back(attention: AttentionType) -> None:
    cfg = _cfg(attention=attention, decoder_step=DecoderStep.luong, rnn_type=RnnType.lstm)
    decoder = _decoder(cfg)
    enc = _enc(cfg, decoder)
    state = decoder.init_state(enc)
    emb = decoder.embed(torch.tensor([4, 5, 6]))
    h_tilde, state, _ = decoder.step(emb, state, enc)
    assert state.input_feed is h_tilde
    pre, new_state, weights = decoder.step(emb, state, enc)
    h, c = decoder.cells[0](torch.cat([emb, h_tilde], -1), (state.hidden[0], state.cell[0]))
    torch.testing.assert_close(new_state.hidden[0], h)
    torch.testing.assert_close(new_state.cell[0], c)
    context, expected = decoder.attention(h, enc.keys, enc.states, enc.mask)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(pre, torch.tanh(decoder.pre_output(torch.cat([h, context], -1))))


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _num_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_forward_projects_and_embeds_once() -> None:
    cfg = _cfg()
    decoder = _decoder(cfg)
    enc = _enc(cfg, decoder)
    output_calls, embedding_calls = _count_calls(decoder.output), _count_calls(decoder.embedding)
    logits, attention = decoder(torch.randint(4, VOCAB, (BATCH, 7)), enc)
    assert logits.shape == (BATCH, 7, VOCAB) and attention.shape == (BATCH, 7, SRC_LEN)
    assert len(output_calls) == 1 and len(embedding_calls) == 1


def test_tied_embeddings_share_the_parameter() -> None:
    decoder = _decoder(_cfg(tie_embeddings=True))
    assert decoder.output.weight is decoder.embedding.weight
    untied = _decoder(_cfg())
    assert untied.output.weight is not untied.embedding.weight
    assert _num_parameters(untied) - _num_parameters(decoder) == VOCAB * 6


def test_tying_needs_matching_sizes() -> None:
    with pytest.raises(NmtError, match=r"tie_embeddings=true: needs emb_size == hidden_size .*, got 4 and 6"):
        _cfg(tie_embeddings=True, emb_size=4)


TARGET = torch.tensor([[1, 4, 9, 16, 5], [1, 7, 7, 2, 0], [1, 12, 3, 8, 6]])
STEP_ORDERS = [(DecoderStep.bahdanau, RnnType.gru), (DecoderStep.luong, RnnType.lstm)]


@pytest.mark.parametrize(("decoder_step", "rnn_type"), STEP_ORDERS)
def test_forward_equals_decoding_step_by_step(decoder_step: DecoderStep, rnn_type: RnnType) -> None:
    cfg = _cfg(decoder_step=decoder_step, rnn_type=rnn_type, dec_layers=2, enc_layers=2)
    decoder = _decoder(cfg)
    enc = _enc(cfg, decoder)
    with torch.no_grad():
        logits, attention = decoder(TARGET, enc)
        want_logits, want_attention = _step_by_step(decoder, TARGET, enc)
    # the same function; forward sums the first cell's input product in two parts, hence rounding
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(attention, want_attention, rtol=0, atol=1e-6)


def _step_by_step(
    decoder: Decoder, tgt_in: torch.Tensor, enc: EncoderOutput
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference for teacher forcing: ``step`` (what search runs) at every position, nothing hoisted."""
    state = decoder.init_state(enc)
    logits, attention = [], []
    for i in range(tgt_in.size(1)):
        pre, state, weights = decoder.step(decoder.embed(tgt_in[:, i]), state, enc)
        logits.append(decoder.logits(pre))
        attention.append(weights)
    return torch.stack(logits, dim=1), torch.stack(attention, dim=1)


@pytest.mark.parametrize(("decoder_step", "rnn_type"), STEP_ORDERS)
def test_forward_has_the_gradients_of_decoding_step_by_step(
    decoder_step: DecoderStep, rnn_type: RnnType
) -> None:
    cfg = _cfg(decoder_step=decoder_step, rnn_type=rnn_type, dec_layers=2, enc_layers=2)
    decoder = (
        _decoder(cfg).double().train()
    )  # train(): the training path, dropout 0 so both are deterministic
    with torch.no_grad():  # a fixed input: no graph shared between the runs
        enc = _enc(cfg, decoder)
    probe = torch.randn(
        BATCH, TARGET.size(1), VOCAB, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    grads = []
    for run in (decoder, lambda tgt, e: _step_by_step(decoder, tgt, e)):
        decoder.zero_grad()
        logits, _ = run(TARGET, enc)
        (logits * probe).sum().backward()
        grads.append({name: p.grad.clone() for name, p in decoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "cells.0.weight_hh" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize(("decoder_step", "rnn_type"), STEP_ORDERS)
def test_gradcheck_of_the_hoisted_products(decoder_step: DecoderStep, rnn_type: RnnType) -> None:
    """Numerical against analytical gradients (float64) of the weights whose products forward takes out of the
    loop: the first cell's, and the pre-output's."""
    cfg = _cfg(decoder_step=decoder_step, rnn_type=rnn_type, emb_size=3, hidden_size=3, enc_hidden_size=3)
    decoder = _decoder(cfg).double()
    with torch.no_grad():  # a fixed input: no graph shared between the runs
        enc = _enc(cfg, decoder)
    names = [
        "cells.0.weight_ih",
        "cells.0.weight_hh",
        "cells.0.bias_ih",
        "cells.0.bias_hh",
        "pre_output.weight",
    ]
    params = dict(decoder.named_parameters())
    tgt = TARGET[:, :3]

    def logits_of(*weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(decoder, {**params, **dict(zip(names, weights))}, (tgt, enc))[0]

    inputs = tuple(params[name].detach().clone().requires_grad_() for name in names)
    assert torch.autograd.gradcheck(logits_of, inputs)


# Computed with the decoder before its two step orders became two functions: a saved model must keep its outputs.
PINNED = {
    DecoderStep.bahdanau: (
        [[0.41223276, -0.64349800, 0.07698518], [0.58833539, -0.61903161, 0.21779959]],
        [0.50385636, 0.49614361, 0.0, 0.0, 0.0],
    ),
    DecoderStep.luong: (
        [[-0.35107386, -0.42843276, 0.19755715], [-0.10976686, -0.47021070, 0.57817632]],
        [0.50401682, 0.49598321, 0.0, 0.0, 0.0],
    ),
}


@pytest.mark.parametrize(("decoder_step", "rnn_type"), STEP_ORDERS)
def test_step_orders_keep_their_pinned_outputs(decoder_step: DecoderStep, rnn_type: RnnType) -> None:
    cfg = _cfg(decoder_step=decoder_step, rnn_type=rnn_type, dec_layers=2, enc_layers=2)
    decoder = _decoder(cfg)
    with torch.no_grad():
        logits, attention = decoder(TARGET, _enc(cfg, decoder))
    expected_logits, expected_attention = PINNED[decoder_step]
    torch.testing.assert_close(logits[:2, -1, :3], torch.tensor(expected_logits), rtol=0, atol=1e-6)
    torch.testing.assert_close(attention[1, -1], torch.tensor(expected_attention), rtol=0, atol=1e-6)
