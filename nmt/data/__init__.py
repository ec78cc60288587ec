"""Data: corpora (bible, text, hf) → cleaned splits → tokenized, cached splits → token-bucket batches."""

import datasets

from nmt.data.batching import Batch, TokenBucketSampler, collate, eval_batches
from nmt.data.corpus import load_corpus
from nmt.data.prepare import PreparedData, format_summary, prepare_data

__all__ = [
    "Batch",
    "PreparedData",
    "TokenBucketSampler",
    "collate",
    "eval_batches",
    "format_summary",
    "load_corpus",
    "prepare_data",
]

# datasets draws a bar for every small map/save; prepare_data reports its own timings and counts instead.
datasets.disable_progress_bars()
