"""Validation: teacher-forced dev loss, then decoding of dev (greedy by default) scored with sacrebleu."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from nmt.config import Config
from nmt.data.batching import eval_batches
from nmt.data.prepare import PreparedData
from nmt.decode import decode_ids
from nmt.metrics import score_corpus
from nmt.model.folded import fold
from nmt.train.loss import sequence_loss
from nmt.vocab import PAD_ID

SAMPLES = 3  # dev translations shown at each validation
# what a validation record keeps; TER (nmt.metrics) would cost ~2 s a validation at one thread, unused
VALIDATION_METRICS = ("bleu", "chrf")


@torch.inference_mode()
def dev_loss(
    model: torch.nn.Module, src_ids: list, tgt_ids: list, max_tokens: int, device: torch.device
) -> float:
    """Mean per-token NLL of the references under teacher forcing."""
    nll = tokens = 0.0
    for batch in eval_batches(src_ids, tgt_ids, max_tokens):
        batch = batch.to(device)
        logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in)
        sums = sequence_loss(logits, batch.tgt_out, 0.0, PAD_ID)
        nll += float(sums.nll)
        tokens += float(sums.n_tokens)
    return nll / max(tokens, 1.0)


def sample_indices(n_sentences: int, count: int = SAMPLES) -> list[int]:
    """``count`` dev positions spread from the first to the last sentence (fewer when dev is smaller): the same
    sentences at every validation, so the person training sees their translations improve."""
    if n_sentences <= count:
        return list(range(n_sentences))
    return [i * (n_sentences - 1) // (count - 1) for i in range(count)]


def validate(model: torch.nn.Module, data: PreparedData, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Score the model on (the first ``val_max_sentences`` of) dev.

    Returns a JSON-ready record of numbers, plus under ``samples`` the source, reference and hypothesis of
    ``SAMPLES`` fixed dev sentences (for the log and TensorBoard, not for the numeric history).
    """
    started = time.monotonic()
    was_training = model.training
    model.eval()
    dev = data.splits["dev"]
    if cfg.train.val_max_sentences:
        dev = dev.select(range(min(cfg.train.val_max_sentences, len(dev))))
    # Dev pairs are never filtered by length; like translation, cut a pathological line (say 100k tokens) to
    # search.max_src_len, or its decoding (1.5x its length, attending over all of it) would stall training.
    limit = cfg.search.max_src_len
    src_ids = [ids[:limit] for ids in dev["src_ids"]]
    tgt_ids = [ids[:limit] for ids in dev["tgt_ids"]]
    loss = dev_loss(model, src_ids, tgt_ids, cfg.train.max_tokens, device)
    # as the translator decodes
    nbest = decode_ids(
        fold(model, compiled=device.type == "cpu"), src_ids, cfg.search, device, attention=False
    )
    hyps = [data.tokenizer.decode_tgt(h[0].tokens) for h in nbest]
    scores = score_corpus(hyps, [list(dev["tgt"])], metrics=VALIDATION_METRICS)
    model.train(was_training)
    return {
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "seconds": time.monotonic() - started,
        "samples": [
            {"source": dev[i]["src"], "reference": dev[i]["tgt"], "hypothesis": hyps[i]}
            for i in sample_indices(len(dev))
        ],
    }
