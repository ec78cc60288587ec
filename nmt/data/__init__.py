"""Data: corpora (bible, text, hf) → cleaned splits → tokenized, cached splits → token-bucket batches.

The names below are imported from their modules on first use, not with the package: translating needs only
``nmt.data.batching`` and must not pay for ``datasets`` and matplotlib, which the rest of the package imports.
"""

import importlib
from typing import Any

_MODULE_OF = {
    "Batch": "batching",
    "TokenBucketSampler": "batching",
    "collate": "batching",
    "eval_batches": "batching",
    "load_corpus": "corpus",
    "PreparedData": "prepare",
    "format_summary": "prepare",
    "prepare_data": "prepare",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"nmt.data.{_MODULE_OF[name]}"), name)
