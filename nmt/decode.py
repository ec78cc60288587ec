"""Decoding many sentences: subword ids in length-sorted batches through :func:`nmt.search.search`.

Translation and validation both decode this way; the results come back in input order whatever the batching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from nmt.config import SearchConfig
from nmt.data.batching import eval_batches
from nmt.search import Hypothesis, search
from nmt.shortlist import Shortlist, shortlist_search


@torch.inference_mode()
def decode_ids(
    model: torch.nn.Module,
    src_ids: Sequence[Sequence[int]],
    cfg: SearchConfig,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
    attention: bool = True,
    shortlist: Shortlist | None = None,
) -> list[list[Hypothesis]]:
    """Search every source sentence (subword ids, no specials); n-best lists in input order, with their attention
    when ``attention`` (scoring needs none: search then keeps no attention buffer).

    Batches hold at most ``cfg.batch_tokens`` source tokens and are sorted by length, so padding stays small.
    ``on_batch(n)`` is called after each batch of ``n`` sentences (progress bars). ``shortlist``: each batch
    scores only its shortlist of target pieces (:mod:`nmt.shortlist`); None: the full vocabulary.
    """
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for batch in eval_batches(src_ids, None, cfg.batch_tokens):
        batch = batch.to(device)
        if shortlist is None:
            nbests = search(model, batch.src, batch.src_lengths, cfg, attention)
        else:
            nbests = shortlist_search(model, shortlist, batch.src, batch.src_lengths, cfg, attention)
        for index, nbest in zip(batch.indices.tolist(), nbests):
            results[index] = nbest
        if on_batch is not None:
            on_batch(len(batch.indices))
    return results
