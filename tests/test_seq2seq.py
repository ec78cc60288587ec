"""The whole model: interface shapes, forward == step-by-step decoding, beams, learning, regression guards."""

import itertools
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nmt.config import AttentionType, BenchmarkConfig, DecoderStep, ModelConfig, RnnType
from nmt.model import DecoderState, EncoderOutput, Seq2Seq, build_model
from nmt.vocab import BOS_ID as BOS
from nmt.vocab import EOS_ID as EOS
from nmt.vocab import PAD_ID as PAD

SRC_V, TGT_V = 19, 23


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: on a busy 2-core machine, 2 intra-op threads make the training loops ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(**overrides) -> ModelConfig:
    base = {"emb_size": 8, "hidden_size": 8, "attention_size": 7, "dropout": 0.1}
    return ModelConfig(**{**base, **overrides})


def _model(cfg: ModelConfig, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return build_model(cfg, SRC_V, TGT_V)


def _pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), PAD, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = torch.tensor(seq)
    return out


def _batch(seed: int = 0, src_lengths=(6, 3, 5), tgt_lengths=(4, 6, 2)):
    """src (with EOS), src_lengths, tgt_in (BOS + tokens), tgt_out (tokens + EOS)."""
    gen = torch.Generator().manual_seed(seed)
    src = [torch.randint(4, SRC_V, (n - 1,), generator=gen).tolist() + [EOS] for n in src_lengths]
    tgt = [torch.randint(4, TGT_V, (n - 1,), generator=gen).tolist() for n in tgt_lengths]
    return (
        _pad(src),
        torch.tensor(src_lengths),
        _pad([[BOS] + t for t in tgt]),
        _pad([t + [EOS] for t in tgt]),
    )


def _loss(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=PAD)


VARIANTS = [
    _cfg(rnn_type=r, decoder_step=s, attention=a)
    for r, s, a in itertools.product(RnnType, DecoderStep, AttentionType)
]
DEEP = [
    _cfg(enc_layers=2, dec_layers=2),
    _cfg(
        rnn_type=RnnType.lstm,
        decoder_step=DecoderStep.luong,
        attention=AttentionType.general,
        enc_layers=2,
        dec_layers=3,
    ),
    _cfg(rnn_type=RnnType.lstm, attention=AttentionType.dot, bridge=False, tie_embeddings=True),
    # annotations twice as wide as the decoder (`dot` then projects the keys), and an odd width
    _cfg(enc_hidden_size=8, attention=AttentionType.dot, decoder_step=DecoderStep.luong),
    _cfg(enc_hidden_size=5, enc_layers=2, rnn_type=RnnType.lstm),
]


def _name(cfg: ModelConfig) -> str:
    enc = f"-enc{cfg.enc_hidden_size}" if cfg.enc_hidden_size else ""
    return f"{cfg.rnn_type}-{cfg.decoder_step}-{cfg.attention}-{cfg.enc_layers}x{cfg.dec_layers}{enc}"


@pytest.mark.parametrize("cfg", VARIANTS + DEEP, ids=_name)
def test_shapes(cfg: ModelConfig) -> None:
    model = _model(cfg)
    src, src_lengths, tgt_in, _ = _batch()
    logits, attention = model(src, src_lengths, tgt_in)
    assert logits.shape == (3, 6, TGT_V) and attention.shape == (3, 6, 6)
    enc = model.encode(src, src_lengths)
    annotation = 2 * (cfg.enc_hidden_size or 4)  # the default: half the decoder's 8 per direction
    assert (
        enc.states.shape == (3, 6, annotation) and enc.mask.shape == (3, 6) and enc.mask.dtype == torch.bool
    )
    assert enc.hidden.shape == (cfg.enc_layers, 3, annotation)
    state = model.init_decoder_state(enc)
    assert state.hidden.shape == (cfg.dec_layers, 3, 8)
    log_probs, state, weights = model.decode_step(tgt_in[:, 0], state, enc)
    assert log_probs.shape == (3, TGT_V) and weights.shape == (3, 6)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3))
    assert (attention.sum(-1) - 1).abs().max() < 1e-6
    assert (attention[1, :, 3:] == 0).all()  # source padding of sentence 1 gets no attention


@pytest.mark.parametrize("cfg", VARIANTS + DEEP, ids=_name)
def test_training_reduces_loss(cfg: ModelConfig) -> None:
    model = _model(cfg).train()
    src, src_lengths, tgt_in, tgt_out = _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(15):
        loss = _loss(model(src, src_lengths, tgt_in)[0], tgt_out)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("cfg", VARIANTS + DEEP, ids=_name)
def test_forward_equals_step_by_step_decoding(cfg: ModelConfig) -> None:
    model = _model(cfg).eval()
    src, src_lengths, tgt_in, _ = _batch()
    with torch.no_grad():
        logits, attention = model(src, src_lengths, tgt_in)
        enc = model.encode(src, src_lengths)
        state = model.init_decoder_state(enc)
        for t in range(tgt_in.size(1)):
            step_logits, _, _ = model.decode_step_logits(tgt_in[:, t], state, enc)
            log_probs, state, weights = model.decode_step(tgt_in[:, t], state, enc)
            torch.testing.assert_close(log_probs, logits[:, t].log_softmax(-1), atol=1e-5, rtol=0)
            assert torch.equal(
                log_probs, step_logits.log_softmax(-1)
            )  # decode_step_logits: before log_softmax
            torch.testing.assert_close(weights, attention[:, t], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cfg", [VARIANTS[0], DEEP[1]], ids=_name)
def test_sentence_translates_the_same_alone_and_in_a_batch(cfg: ModelConfig) -> None:
    model = _model(cfg).eval()
    src, src_lengths, tgt_in, _ = _batch()
    logits, attention = model(src, src_lengths, tgt_in)
    alone, alone_attention = model(src[1:2, :3], src_lengths[1:2], tgt_in[1:2])
    torch.testing.assert_close(logits[1:2], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(attention[1:2, :, :3], alone_attention, atol=1e-6, rtol=0)


@pytest.mark.parametrize("attention", list(AttentionType))
def test_keys_are_projected_once_per_forward(attention: AttentionType) -> None:
    model = _model(_cfg(attention=attention))
    src, src_lengths, tgt_in, _ = _batch()
    project = model.decoder.attention.project_keys
    with mock.patch.object(model.decoder.attention, "project_keys", wraps=project) as spy:
        model(src, src_lengths, tgt_in)
    assert spy.call_count == 1


def test_index_select_round_trip_and_beam_expansion() -> None:
    model = _model(DEEP[1]).eval()  # LSTM + input feeding: every optional field is set
    src, src_lengths, tgt_in, _ = _batch()
    enc = model.encode(src, src_lengths)
    state = model.init_decoder_state(enc)
    _, state, _ = model.decode_step(tgt_in[:, 0], state, enc)

    order = torch.tensor([2, 0, 1])
    inverse = torch.argsort(order)
    for original in (enc, state):
        back = original.index_select(order).index_select(inverse)
        assert type(back) is type(original)
        for name, value in vars(original).items():
            assert torch.equal(getattr(back, name), value), name

    beams = torch.arange(3).repeat_interleave(2)  # each sentence twice, as beam search expands it
    log_probs, _, weights = model.decode_step(tgt_in[:, 1], state, enc)
    beam_log_probs, beam_state, beam_weights = model.decode_step(
        tgt_in[beams, 1], state.index_select(beams), enc.index_select(beams)
    )
    torch.testing.assert_close(beam_log_probs, log_probs[beams])
    torch.testing.assert_close(beam_weights, weights[beams])
    assert isinstance(beam_state, DecoderState) and beam_state.hidden.shape[1] == 6
    assert isinstance(enc, EncoderOutput)


def test_memorises_a_small_corpus() -> None:
    """32 random pairs, vocabulary 20, lengths 3-7: greedy decoding must reproduce >= 90 % of them."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 8, (32, 2), generator=gen).tolist()
    pairs = [
        (
            torch.randint(4, 20, (s,), generator=gen).tolist(),
            torch.randint(4, 20, (t,), generator=gen).tolist(),
        )
        for s, t in lengths
    ]
    src = _pad([s + [EOS] for s, _ in pairs])
    src_lengths = torch.tensor([len(s) + 1 for s, _ in pairs])
    tgt_in, tgt_out = _pad([[BOS] + t for _, t in pairs]), _pad([t + [EOS] for _, t in pairs])

    torch.manual_seed(0)
    model = build_model(ModelConfig(emb_size=32, hidden_size=64, attention_size=64, dropout=0.0), 20, 20)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = _loss(model(src, src_lengths, tgt_in)[0], tgt_out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        enc = model.encode(src, src_lengths)
        state = model.init_decoder_state(enc)
        prev, outputs = torch.full((32,), BOS), []
        for _ in range(10):
            log_probs, state, _ = model.decode_step(prev, state, enc)
            prev = log_probs.argmax(-1)
            outputs.append(prev)
    hyps = [row[: row.index(EOS)] if EOS in row else row for row in torch.stack(outputs, 1).tolist()]
    assert sum(hyp == tgt for hyp, (_, tgt) in zip(hyps, pairs)) >= 0.9 * 32


def test_initialisation() -> None:
    model = _model(_cfg(init_range=0.05, tie_embeddings=True))
    assert all(p.abs().max() <= 0.05 for p in model.parameters())
    assert (model.encoder.embedding.weight[PAD] == 0).all()
    assert (model.decoder.embedding.weight[PAD] == 0).all()
    assert model.decoder.output.weight is model.decoder.embedding.weight
    default = _model(_cfg(init_range=0.0))  # PyTorch's: GRU weights are U(-1/sqrt(8), 1/sqrt(8))
    assert default.encoder.rnn.weight_hh_l0.abs().max() > 0.2


def test_parameter_count_of_the_default_model() -> None:
    model = build_model(ModelConfig(), 4252, 5331)
    assert model.num_parameters() == 5_039_571
    assert model.num_parameters(trainable_only=True) == 5_039_571
    tied = build_model(ModelConfig(tie_embeddings=True), 4252, 5331)
    assert model.num_parameters() - tied.num_parameters() == 5331 * 256
    # The peers' OpenNMT-py model, as the benchmark mirrors it (128 per encoder direction, input feeding, no
    # bridge, attention 256), has 4,977,624.
    peer_shape = BenchmarkConfig().config.model
    assert build_model(peer_shape, 4252, 5331).num_parameters() == 4_974_035


@pytest.mark.parametrize("cfg", [VARIANTS[0], VARIANTS[-1], *DEEP[1:]], ids=_name)
def test_flop_count_matches_torch_counter(cfg: ModelConfig) -> None:
    model = _model(cfg).eval()
    src, src_lengths, tgt_in, _ = _batch(src_lengths=(6,), tgt_lengths=(5,))
    with FlopCounterMode(display=False) as counter:
        model(src, src_lengths, tgt_in)
    flops = model.forward_flops(6, 5)
    # torch's counter does not see inside the fused CPU nn.LSTM kernel (it does see nn.GRU and the cells)
    unseen = flops["encoder"] if cfg.rnn_type == RnnType.lstm else 0
    assert flops["total"] - unseen == counter.get_total_flops()


def test_bf16_autocast() -> None:
    model = _model(_cfg(rnn_type=RnnType.lstm, decoder_step=DecoderStep.luong)).eval()
    src, src_lengths, tgt_in, _ = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, attention = model(src, src_lengths, tgt_in)
    assert torch.isfinite(logits).all()
    assert (attention[1, :, 3:] == 0).all()
    torch.testing.assert_close(attention.float().sum(-1), torch.ones(3, 6), atol=1e-2, rtol=0)


def test_regression_checksum() -> None:
    """Fixed seed, fixed inputs: the logits must not change unless the model is changed on purpose."""
    model = _model(_cfg(enc_layers=2, dec_layers=2, enc_hidden_size=8), seed=1234).double().eval()
    src, src_lengths, tgt_in, _ = _batch(seed=7)
    logits, attention = model(src, src_lengths, tgt_in)
    weights = torch.linspace(-1, 1, logits.numel(), dtype=torch.float64).view_as(logits)
    assert logits.sum().item() == pytest.approx(1.8178240809635091, abs=1e-5)
    assert (logits * weights).sum().item() == pytest.approx(-0.15982535535236114, abs=1e-5)
    assert (attention * torch.arange(6)).sum().item() == pytest.approx(33.00406719362081, abs=1e-5)


def test_training_loss_equals_the_step_by_step_loss_on_a_real_batch() -> None:
    """The trained fixture model on digit sentences: teacher forcing (its products hoisted out of the loop)
    and decode_step (search's path) give the same summed loss to float32 rounding of the sum (1e-6 relative: the
    two paths add in other orders, and GEMM kernels differ between AVX2 and AVX-512 machines)."""
    from pathlib import Path

    from corpus import EN, FR

    from nmt.config import WeightsChoice
    from nmt.data.batching import collate
    from nmt.train.loss import sequence_loss
    from nmt.translate import load_model_dir

    _, tok, model = load_model_dir(Path(__file__).parent / "fixtures" / "model_dir_v2", WeightsChoice())
    model.eval()
    src_lines = [" ".join(EN[(i * k) % 10] for k in range(1, 2 + i % 6)) for i in range(12)]
    tgt_lines = [" ".join(FR[(i * k) % 10] for k in range(1, 2 + i % 6)) for i in range(12)]
    batch = collate(tok.encode_src(src_lines), tok.encode_tgt(tgt_lines), range(12))
    with torch.no_grad():
        logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in)
        forced = sequence_loss(logits, batch.tgt_out, 0.1, PAD).loss
        enc = model.encode(batch.src, batch.src_lengths)
        state = model.init_decoder_state(enc)
        steps = []
        for t in range(batch.tgt_in.size(1)):
            log_probs, state, _ = model.decode_step(batch.tgt_in[:, t], state, enc)
            steps.append(log_probs)
        stepped = sequence_loss(torch.stack(steps, dim=1), batch.tgt_out, 0.1, PAD).loss
    assert forced.item() > 1.0  # a real loss, not a degenerate batch
    assert forced.item() == pytest.approx(stepped.item(), rel=1e-6, abs=0)
