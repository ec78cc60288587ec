"""The special ids: what models, search and the tokenizer agree on, without loading sentencepiece."""

import pytest
from corpus import loaded_after_import

from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID


def test_ids_are_distinct_and_first():
    assert sorted((PAD_ID, UNK_ID, BOS_ID, EOS_ID)) == [0, 1, 2, 3]


@pytest.mark.slow
def test_model_and_search_do_not_load_sentencepiece():
    assert loaded_after_import("nmt.model, nmt.search", ["sentencepiece"]) == []
