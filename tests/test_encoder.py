"""Bidirectional encoder: shapes, packing, final states, padding independence."""

import pytest
import torch

from nmt.config import RnnType
from nmt.model.encoder import Encoder
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
