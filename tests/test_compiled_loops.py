"""The compiled loops over time (decoder, both step orders; encoder) against the Python and torch loops."""

import copy
import shutil

import pytest
import torch
from corpus import digit_config
from test_decoder import TARGET, _cfg, _decoder, _enc

import nmt.model.decoder as decoder_module
from nmt.config import AttentionType, DecoderStep, ModelConfig, RnnType
from nmt.model.compiled_loops import BahdanauGruLoop, BiGruLoop, LuongGruLoop, loops_extension
from nmt.model.decoder import Decoder
from nmt.model.encoder import Encoder
from nmt.model.state import EncoderOutput
from nmt.train.trainer import Trainer

# A machine without a C++ compiler or ninja trains on the Python loop; with them, a failed build is a failure.
pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None or shutil.which("ninja") is None,
    reason="the compiled loop needs a C++ compiler and ninja",
)


def _compiled(decoder: Decoder) -> Decoder:
    """A copy of ``decoder`` that runs teacher forcing through the compiled loop."""
    fast = copy.deepcopy(decoder)
    assert fast.compile_loop() == "compiled"
    return fast


def _outputs_and_gradients(decoder: Decoder, enc: EncoderOutput, tgt: torch.Tensor) -> tuple[list, dict]:
    """Logits, attention, and the gradients of a fixed random projection of both (the attention's gradient
    is zero in training, but the loop must carry one)."""
    decoder.zero_grad()
    logits, attention = decoder(tgt, enc)
    gen = torch.Generator().manual_seed(3)
    probes = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in (logits, attention)]
    ((logits * probes[0]).sum() + (attention * probes[1]).sum()).backward()
    grads = {name: p.grad.clone() for name, p in decoder.named_parameters() if p.grad is not None}
    return [logits.detach(), attention.detach()], grads


STEPS = [DecoderStep.bahdanau, DecoderStep.luong]  # the default model's order, and the peers' shape's


@pytest.mark.parametrize("decoder_step", STEPS)
def test_forward_and_gradients_equal_the_python_loop_in_float64(decoder_step: DecoderStep) -> None:
    cfg = _cfg(decoder_step=decoder_step)  # one GRU layer and additive attention, as compile_loop needs
    reference = _decoder(cfg).double().train()  # train(): the training path; dropout 0 keeps it deterministic
    with torch.no_grad():
        enc = _enc(cfg, reference)  # source lengths 5, 2 and 4: padding in two rows
    want, want_grads = _outputs_and_gradients(reference, enc, TARGET)
    got, got_grads = _outputs_and_gradients(_compiled(reference), enc, TARGET)
    for name, tensor in zip(("logits", "attention"), got):
        torch.testing.assert_close(tensor, want[name == "attention"], rtol=0, atol=1e-14, msg=name)
    assert got_grads.keys() == want_grads.keys()
    assert {
        "cells.0.weight_hh",
        "attention.query_layer.weight",
        "attention.energy_layer.weight",
    } <= got_grads.keys()
    for name, grad in want_grads.items():
        assert grad.abs().max() > 0, name  # every gradient is exercised
        torch.testing.assert_close(got_grads[name], grad, rtol=0, atol=1e-13, msg=name)


@pytest.mark.parametrize("decoder_step", STEPS)
def test_gradcheck_of_the_compiled_functions(decoder_step: DecoderStep) -> None:
    """Numerical against the hand-written analytical gradients (float64) of every differentiable input,
    through every output, with padded source positions (and, for the Luong loop, dropout masks)."""
    gen = torch.Generator().manual_seed(4)
    steps, batch, hidden, src_len, att, dim = 3, 2, 3, 4, 2, 5

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()

    padding = torch.tensor([[False, False, False, False], [False, False, True, True]])
    shared = (
        rand(steps, batch, 3 * hidden),
        rand(batch, hidden),
        rand(batch, src_len, att),
        rand(batch, src_len, dim),
        padding,
        rand(att, hidden),
        rand(att),
    )
    if decoder_step == DecoderStep.bahdanau:
        function, own = BahdanauGruLoop, (rand(3 * hidden, dim), rand(3 * hidden, hidden), rand(3 * hidden))
    else:
        masks = (torch.rand(steps, batch, hidden + dim, generator=gen) > 0.3).double() / 0.7
        own = (rand(3 * hidden, hidden), rand(3 * hidden, hidden), rand(3 * hidden))
        function, own = LuongGruLoop, (*own, rand(hidden, hidden + dim), rand(hidden), masks)
    assert torch.autograd.gradcheck(function.apply, (*shared, *own))


@pytest.mark.parametrize("key_scale", [1.0, 100.0], ids=["keys", "saturating-keys"])
@pytest.mark.parametrize("decoder_step", STEPS)
def test_a_real_sized_batch_in_float32_keeps_loss_and_gradients(
    decoder_step: DecoderStep, key_scale: float
) -> None:
    """The default model's sizes on a training-sized batch: the loss equal to 1e-5, the gradients to float
    rounding; also with keys 100 times larger, so that the score's sigmoid saturates far past the clamp of the
    compiled kernels' float exp (|x| > 87)."""
    torch.manual_seed(5)
    cfg = ModelConfig(dropout=0.0, decoder_step=decoder_step)
    annotation = 2 * (cfg.hidden_size // 2)
    reference = Decoder(cfg, 300).train()
    batch, src_len, tgt_len = 40, 30, 33
    lengths = torch.randint(5, src_len + 1, (batch,))
    lengths[0] = src_len
    mask = torch.arange(src_len).unsqueeze(0) < lengths.unsqueeze(1)
    with torch.no_grad():
        states = torch.randn(batch, src_len, annotation) * mask.unsqueeze(-1)
        enc = EncoderOutput(
            states,
            mask,
            reference.attention.project_keys(states) * key_scale,
            torch.randn(1, batch, annotation),
            None,
        )
    tgt = torch.randint(4, 300, (batch, tgt_len))
    results = []
    for decoder in (reference, _compiled(reference)):
        decoder.zero_grad()
        logits, _ = decoder(tgt, enc)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.roll(-1, 1).flatten())
        loss.backward()
        results.append(
            (loss.item(), {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None})
        )
    (want_loss, want_grads), (got_loss, got_grads) = results
    if key_scale > 1:  # the keys do saturate it
        assert (enc.keys.abs() > 87).float().mean() > 0.1
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "overrides",
    [
        {"rnn_type": RnnType.lstm},
        {"attention": AttentionType.dot},
        {"dec_layers": 2, "enc_layers": 2},
    ],
    ids=["lstm", "dot", "two-layers"],
)
def test_other_models_keep_the_python_loop(overrides: dict) -> None:
    decoder = _decoder(_cfg(**overrides))
    reason = decoder.compile_loop()
    assert reason.startswith("the Python loop (the compiled one covers")
    assert decoder._teacher_forced == decoder._bahdanau_teacher_forced


def test_a_failed_build_keeps_the_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_module, "loops_extension", lambda: None)
    decoder = _decoder(_cfg())
    assert decoder.compile_loop().startswith("the Python loop (the C++ extension could not be built")
    assert decoder._teacher_forced == decoder._bahdanau_teacher_forced


def test_other_float_types_run_the_python_loop() -> None:
    """bfloat16 (and, on the CPU, autocast) are outside the extension: the compiled decoder gives exactly the
    Python loop's numbers there."""
    cfg = _cfg()
    reference = _decoder(cfg).to(torch.bfloat16)
    with torch.no_grad():
        enc = _enc(cfg, reference)
        want = reference(TARGET, enc)
        got = _compiled(reference)(TARGET, enc)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            float_decoder = _decoder(cfg)
            autocast_want = float_decoder(TARGET, _enc(cfg, float_decoder))
            autocast_got = _compiled(float_decoder)(TARGET, _enc(cfg, float_decoder))
    for a, b in zip(got + autocast_got, want + autocast_want):
        assert torch.equal(a, b)


def test_training_updates_equal_those_of_the_python_loops(tmp_path) -> None:
    """Three trainer updates on the digit corpus with the compiled loops and loss (the default) and without
    them."""
    trainers = []
    for name, compiled in (("compiled", True), ("python", False)):
        cfg = digit_config(tmp_path / name)
        cfg.model.dropout = 0.0  # both runs must see identical computations
        cfg.train.compiled_loops = cfg.train.compiled_loss = compiled
        cfg.train.max_minutes, cfg.train.max_steps = 0, 50  # a schedule by steps, not by each run's clock
        trainers.append(Trainer(cfg))
    fast, slow = trainers
    assert fast.loops == "encoder loop compiled, decoder loop compiled"
    assert slow.loops == "encoder loop torch's, decoder loop the Python loop"
    assert fast.compiled_loss and not slow.compiled_loss
    for _, indices in zip(range(3), iter(fast.sampler)):
        (fast_loss, _, _), (slow_loss, _, _) = (
            trainer._update([trainer._batch(indices)]) for trainer in trainers
        )
        assert fast_loss == pytest.approx(slow_loss, rel=1e-5)
    for p, q in zip(fast.model.parameters(), slow.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_the_extension_builds_here() -> None:
    """Where a compiler and ninja exist the extension must build: a silent fallback would hide a broken source."""
    extension = loops_extension()
    assert extension is not None
    for order in ("bahdanau", "luong", "bigru"):
        assert callable(getattr(extension, f"{order}_forward")) and callable(
            getattr(extension, f"{order}_backward")
        )


# ------------------------------------------------------------------------------------------------ encoder
@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_states_and_gradients_equal_torch_gru_in_float64(layers: int) -> None:
    torch.manual_seed(6)
    reference = Encoder(RnnType.gru, 20, 6, 5, num_layers=layers, dropout=0.0).double().train()
    fast = copy.deepcopy(reference)
    assert fast.compile_loop() == "compiled"
    lengths = torch.tensor([7, 1, 4, 7, 5])
    src = torch.randint(4, 20, (5, 7), generator=torch.Generator().manual_seed(7))
    src[torch.arange(7) >= lengths[:, None]] = 0
    results = []
    for encoder in (reference, fast):
        states, hidden, _ = encoder(src, lengths)
        gen = torch.Generator().manual_seed(8)
        probe = (states * torch.randn(states.shape, generator=gen, dtype=torch.float64)).sum()
        probe = probe + (hidden * torch.randn(hidden.shape, generator=gen, dtype=torch.float64)).sum()
        grads = torch.autograd.grad(probe, list(encoder.parameters()))
        results.append((states, hidden, grads))
    (want_states, want_hidden, want_grads), (states, hidden, grads) = results
    torch.testing.assert_close(states, want_states, rtol=0, atol=1e-14)
    torch.testing.assert_close(hidden, want_hidden, rtol=0, atol=1e-14)
    names = [name for name, _ in reference.named_parameters()]
    for name, got, want in zip(names, grads, want_grads, strict=True):
        if name != "embedding.weight":  # the padding row has none
            assert want.abs().max() > 0, name
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13, msg=name)


def test_gradcheck_of_the_bidirectional_function() -> None:
    gen = torch.Generator().manual_seed(9)
    steps, batch, hidden = 4, 2, 3

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()

    inputs = (rand(steps, 2, batch, 3 * hidden), rand(2, 3 * hidden, hidden), rand(2, 3 * hidden))
    assert torch.autograd.gradcheck(BiGruLoop.apply, inputs)


def test_an_lstm_encoder_keeps_torchs_loop() -> None:
    encoder = Encoder(RnnType.lstm, 20, 6, 5)
    assert encoder.compile_loop() == "torch's (the compiled loop covers a GRU encoder)"
    assert encoder._directions == encoder._directions_of_torch_gru
