"""Bidirectional encoder: shapes, packed and unpacked runs, final states, padding independence."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import RnnType
from nmt.model.dropout import dropout
from nmt.model.encoder import Encoder
from nmt.translate import quantize_int8
from nmt.vocab import PAD_ID

VOCAB, EMB, HID = 20, 6, 5


def _encoder(rnn_type: RnnType, layers: int = 2) -> Encoder:
    torch.manual_seed(0)
    return Encoder(rnn_type, VOCAB, EMB, HID, num_layers=layers, dropout=0.3).eval()


def _padded(lengths: list[int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (len(lengths), max(lengths)), generator=gen)
    for row, length in enumerate(lengths):
        src[row, length:] = PAD_ID
    return src


@pytest.mark.parametrize("rnn_type", list(RnnType))
def test_shapes_and_zero_states_on_padding(rnn_type: RnnType) -> None:
    encoder = _encoder(rnn_type, layers=3)
    lengths = [6, 2, 4]
    states, hidden, cell = encoder(_padded(lengths), torch.tensor(lengths))
    assert states.shape == (3, 6, 2 * HID)
    assert hidden.shape == (3, 3, 2 * HID)
    if rnn_type == RnnType.lstm:
        assert cell is not None and cell.shape == (3, 3, 2 * HID)
    else:
        assert cell is None
    assert (states[1, 2:] == 0).all() and (states[2, 4:] == 0).all()


@pytest.mark.parametrize("rnn_type", list(RnnType))
def test_packed_equals_unpacked_without_padding(rnn_type: RnnType) -> None:
    encoder = _encoder(rnn_type)
    src = _padded([5, 5, 5])
    states, hidden, cell = encoder(src, torch.tensor([5, 5, 5]))
    direct, final = encoder.rnn(encoder.embedding(src))
    final_h, final_c = final if rnn_type == RnnType.lstm else (final, None)
    torch.testing.assert_close(states, direct)
    # final_h is [layers*2, batch, hidden], forward then backward per layer
    for layer in range(2):
        torch.testing.assert_close(hidden[layer], torch.cat([final_h[2 * layer], final_h[2 * layer + 1]], -1))
        if final_c is not None:
            torch.testing.assert_close(
                cell[layer], torch.cat([final_c[2 * layer], final_c[2 * layer + 1]], -1)
            )


@pytest.mark.parametrize("rnn_type", list(RnnType))
def test_final_state_is_forward_last_and_backward_first(rnn_type: RnnType) -> None:
    encoder = _encoder(rnn_type)
    lengths = [6, 3]
    states, hidden, _ = encoder(_padded(lengths), torch.tensor(lengths))
    for row, length in enumerate(lengths):
        torch.testing.assert_close(hidden[-1, row, :HID], states[row, length - 1, :HID])
        torch.testing.assert_close(hidden[-1, row, HID:], states[row, 0, HID:])


@pytest.mark.parametrize("rnn_type", list(RnnType))
def test_padded_sentence_encodes_as_if_alone(rnn_type: RnnType) -> None:
    encoder = _encoder(rnn_type)
    lengths = [7, 3, 5]
    src = _padded(lengths)
    states, hidden, cell = encoder(src, torch.tensor(lengths))
    for row, length in enumerate(lengths):
        alone, alone_hidden, alone_cell = encoder(src[row : row + 1, :length], torch.tensor([length]))
        torch.testing.assert_close(states[row : row + 1, :length], alone)
        torch.testing.assert_close(hidden[:, row : row + 1], alone_hidden)
        if cell is not None:
            torch.testing.assert_close(cell[:, row : row + 1], alone_cell)


def test_padding_embedding_gets_no_gradient() -> None:
    encoder = _encoder(RnnType.gru).train()
    lengths = [4, 2]
    states, hidden, _ = encoder(_padded(lengths), torch.tensor(lengths))
    (states.sum() + hidden.sum()).backward()
    assert (encoder.embedding.weight.grad[PAD_ID] == 0).all()
    assert (encoder.embedding.weight[PAD_ID] == 0).all() and encoder.embedding.padding_idx == PAD_ID


def test_dropout_between_layers_only_when_deep() -> None:
    assert _encoder(RnnType.gru, layers=1).rnn.dropout == 0.0
    assert _encoder(RnnType.gru, layers=2).rnn.dropout == 0.3


def _grads(encoder: Encoder, out: tuple[torch.Tensor, ...], seed: int = 1) -> list[torch.Tensor]:
    """Gradients of every parameter for a fixed random projection of the states and final hidden states."""
    gen = torch.Generator().manual_seed(seed)
    states, hidden = out[0], out[1]
    loss = (states * torch.randn(states.shape, generator=gen)).sum()
    loss = loss + (hidden * torch.randn(hidden.shape, generator=gen)).sum()
    return list(torch.autograd.grad(loss, list(encoder.parameters())))


@pytest.mark.parametrize("layers", [1, 3])
def test_unpacked_gru_equals_packed_with_gradients(layers: int) -> None:
    torch.manual_seed(0)
    encoder = Encoder(RnnType.gru, VOCAB, EMB, HID, num_layers=layers, dropout=0.0).train()
    lengths = [9, 1, 4, 9, 6]
    src = _padded(lengths, seed=3)
    packed = encoder.encode_packed(encoder.embedding(src), torch.tensor(lengths))
    unpacked = encoder.encode_unpacked(encoder.embedding(src), torch.tensor(lengths))
    torch.testing.assert_close(unpacked[0], packed[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(unpacked[1], packed[1], rtol=0, atol=1e-6)
    for got, want in zip(_grads(encoder, unpacked), _grads(encoder, packed), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (unpacked[0][1, 1:] == 0).all() and (unpacked[0][2, 4:] == 0).all()


def test_forward_runs_a_float_gru_on_the_cpu_unpacked() -> None:
    encoder = _encoder(RnnType.gru, layers=2)
    lengths = [5, 2, 3]
    src = _padded(lengths)
    states, hidden, cell = encoder(src, torch.tensor(lengths))
    want_states, want_hidden = encoder.encode_unpacked(encoder.embedding(src), torch.tensor(lengths))
    assert torch.equal(states, want_states) and torch.equal(hidden, want_hidden) and cell is None


def test_deep_unpacked_drops_out_between_layers_like_stacked_packed_layers() -> None:
    """Training mode, p = 0.3: the same as a stack of one-layer packed GRUs with the same dropout masks
    (the embedding's, then one between the layers), drawn in the same order from the same seed."""
    encoder = _encoder(RnnType.gru, layers=2).train()
    lengths = [7, 3, 5]
    src, src_lengths = _padded(lengths), torch.tensor(lengths)
    torch.manual_seed(5)
    states, hidden, _ = encoder(src, src_lengths)

    single = [torch.nn.GRU(n_in, HID, batch_first=True, bidirectional=True) for n_in in (EMB, 2 * HID)]
    for layer, gru in enumerate(single):
        for name, param in gru.named_parameters():
            param.data.copy_(getattr(encoder.rnn, name.replace("_l0", f"_l{layer}")))
    torch.manual_seed(5)
    layer_input, finals = dropout(encoder.embedding(src), 0.3, True), []
    for layer, gru in enumerate(single):
        if layer > 0:
            layer_input = dropout(layer_input, 0.3, True)
        packed = pack_padded_sequence(layer_input, src_lengths, batch_first=True, enforce_sorted=False)
        out, final = gru(packed)
        layer_input, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        finals.append(torch.cat([final[0], final[1]], dim=-1))
    torch.testing.assert_close(states, layer_input, rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden, torch.stack(finals), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "int8 gru"])
def test_lstm_and_int8_gru_run_packed(kind: str) -> None:
    encoder = _encoder(RnnType.lstm if kind == "lstm" else RnnType.gru)
    if kind == "int8 gru":
        encoder = quantize_int8(encoder)
    lengths = [6, 2, 4]
    src = _padded(lengths)
    states, hidden, cell = encoder(src, torch.tensor(lengths))
    want = encoder.encode_packed(encoder.embedding(src), torch.tensor(lengths))
    assert torch.equal(states, want[0]) and torch.equal(hidden, want[1])
    assert (cell is None) == (kind != "lstm")
