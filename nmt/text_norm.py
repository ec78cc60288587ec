"""Text normalisation: the one form a line of text takes before tokenization, in training and in translation.

Cleaning normalises every side of every corpus split with ``data.clean.nfc``, and a translator normalises its
input with the ``data.clean.nfc`` of its model directory's config.yaml, so a model is fed text exactly as its
training text was.
"""

from __future__ import annotations

import re
import unicodedata

_SURROGATES = re.compile("[\ud800-\udfff]")


def normalise(text: str | None, nfc: bool) -> str:
    """``text`` as a model sees it: one line, single spaces, nothing the tokenizer cannot take.

    Lone surrogates (what a ``surrogateescape`` decode makes of bad bytes) become U+FFFD; Unicode NFC applies
    when ``nfc`` (``data.clean.nfc``); every whitespace run -- tabs, no-break spaces and newline characters of
    any kind (``\\r``, ``\\x0b``, ``\\x1c``, ``\\x85``, ``\\u2028``, ...) -- becomes one space, and the ends are
    stripped, so one line stays one line. ``None`` (a missing value in a dataset) gives ``""``.
    """
    text = _SURROGATES.sub("\ufffd", text or "")
    if nfc:
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())
