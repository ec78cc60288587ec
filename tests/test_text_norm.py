"""Text normalisation: NFC on request, every whitespace and newline kind to one space, surrogates replaced."""

import unicodedata

import pytest

from nmt.text_norm import normalise


def test_nfc_on_request():
    assert normalise("cafe\u0301", nfc=True) == "caf\u00e9"
    assert normalise("cafe\u0301", nfc=False) == "cafe\u0301"
    assert normalise("caf\u00e9", nfc=False) == "caf\u00e9"  # no decomposition either


@pytest.mark.parametrize("nfc", [True, False])
def test_one_line_single_spaces(nfc):
    assert normalise("  a\u2028b\x0bc\x85d \t e\u00a0f\r\ng\x1ch\u2029 ", nfc) == "a b c d e f g h"
    assert normalise(None, nfc) == "" and normalise(" \n\r\t", nfc) == ""


@pytest.mark.parametrize("nfc", [True, False])
def test_lone_surrogates_become_the_replacement_character(nfc):
    out = normalise("a\ud800b \udcff", nfc)
    assert out == "a\ufffdb \ufffd"
    out.encode("utf-8")  # strict: encodable, so a tokenizer can take it


@pytest.mark.parametrize("nfc", [True, False])
def test_idempotent(nfc):
    text = "  Cafe\u0301\u2028 \ud800 Ω\u212b  "
    once = normalise(text, nfc)
    assert normalise(once, nfc) == once
    assert unicodedata.is_normalized("NFC", once) == nfc
