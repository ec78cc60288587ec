"""Decoding many sentences: input order, batches under the token budget, the same as one sentence at a time."""

import pytest
import torch

from nmt.config import ModelConfig, SearchConfig
from nmt.decode import decode_ids
from nmt.model import build_model
from nmt.search import search
from nmt.vocab import EOS_ID

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(emb_size=16, hidden_size=32, attention_size=16, dropout=0.0)
    return build_model(cfg, 30, 30).eval()


def alone(model, ids: list[int], cfg: SearchConfig):
    src = torch.tensor([ids + [EOS_ID]])
    return search(model, src, torch.tensor([src.size(1)]), cfg)[0]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_results_in_input_order_equal_one_sentence_at_a_time(model, beam_size):
    src_ids = [[5 + (i * 7 + j) % 25 for j in range(1 + (i * 5) % 11)] for i in range(12)]
    cfg = SearchConfig(beam_size=beam_size, nbest=min(beam_size, 2), batch_tokens=24)
    batches: list[int] = []
    results = decode_ids(model, src_ids, cfg, CPU, on_batch=batches.append)
    assert len(batches) > 1 and sum(batches) == len(src_ids)  # several batches, every sentence once
    for ids, nbest in zip(src_ids, results):
        expected = alone(model, ids, cfg)
        assert [h.tokens for h in nbest] == [h.tokens for h in expected]
        assert [h.score for h in nbest] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_no_sentences_no_batches(model):
    calls: list[int] = []
    assert decode_ids(model, [], SearchConfig(), CPU, on_batch=calls.append) == [] and calls == []
