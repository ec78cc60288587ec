"""The named stages of data preparation, and the hook through which a tool watches them.

:func:`nmt.data.prepare.prepare_data` runs each stage inside ``stage(name)``, a context manager supplied by the
caller: the scale benchmark (:mod:`nmt.tools.scale`) measures wall time and peak memory per stage this way.
A stage that a cache makes unnecessary does not run, so its name does not appear.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

StageHook = Callable[[str], contextlib.AbstractContextManager[None]]

# In the order they run. Corpus (nmt.data.corpus): look the cache up; on a miss read, clean, save.
LOAD_CORPUS, READ, CLEAN, SAVE_CORPUS = "load_corpus", "read", "clean", "save_corpus"
# Tokenizer: load the run directory's, or sample the training text and train one.
LOAD_TOKENIZER, SAMPLE, TRAIN_TOKENIZER = "tokenizer_load", "tokenizer_sample", "tokenizer_train"
# Tokenized splits: look the cache up; on a miss tokenize, drop training pairs over max_len, save.
LOAD_TOKENIZED, TOKENIZE, MAX_LEN, SAVE_TOKENIZED = (
    "load_tokenized",
    "tokenize",
    "max_len_filter",
    "save_tokenized",
)
SUMMARY = "summary"  # the counts, summary.json and lengths.png


def unwatched(name: str) -> contextlib.AbstractContextManager[None]:
    """The default hook: the stage runs as it is."""
    return contextlib.nullcontext()


class StageTimer:
    """A stage hook that runs each stage inside ``hook`` and adds up its wall time in ``seconds[name]``."""

    def __init__(self, hook: StageHook = unwatched) -> None:
        self.hook = hook
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        with self.hook(name):
            yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
