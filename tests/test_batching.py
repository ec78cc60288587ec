import numpy as np
import pytest
import torch

from nmt.data.batching import TokenBucketSampler, collate, eval_batches, example_costs, pack
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID

MAX_TOKENS = 400


@pytest.fixture(scope="module")
def lengths():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 60, size=3000)
    tgt = np.clip(src + rng.integers(-5, 6, size=3000), 1, None)
    src[:3] = 500  # longer than max_tokens on their own
    return src, tgt


def cost(batch, src, tgt) -> int:
    return len(batch) * int(example_costs(src[batch], tgt[batch]).max())


def epoch(sampler, e):
    sampler.set_epoch(e)
    return list(sampler)


def test_collate_pads_and_adds_specials():
    batch = collate([[5, 6, 7], [8]], [[9], [10, 11]], [4, 2])
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [4, 2]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch.src_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.n_tgt_tokens == 5 and batch.indices.tolist() == [4, 2]
    assert all(t.dtype == torch.long for t in (batch.src, batch.src_lengths, batch.tgt_in, batch.indices))
    moved = batch.to("cpu")
    assert torch.equal(moved.tgt_out, batch.tgt_out)


def test_collate_without_targets():
    batch = collate([[5]], None, [0])
    assert batch.tgt_in is None and batch.tgt_out is None and batch.n_tgt_tokens == 0
    assert batch.to("cpu").tgt_in is None


def test_pack_respects_max_tokens_and_isolates_long_examples():
    costs = np.array([2, 3, 3, 4, 9, 20])
    assert [b.tolist() for b in pack(np.arange(6), costs, 10)] == [[0, 1, 2], [3], [4], [5]]


def test_batches_fit_and_cover_every_example_once(lengths):
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1)
    batches = epoch(sampler, 0)
    assert len(batches) == len(sampler)
    assert all(cost(b, src, tgt) <= MAX_TOKENS or len(b) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(src)))
    real = sum(int(example_costs(src[b], tgt[b]).sum()) for b in batches)
    assert real / sum(cost(b, src, tgt) for b in batches) > 0.9  # bucketing keeps padding low


def test_order_depends_on_seed_and_epoch_only(lengths):
    src, tgt = lengths
    first = epoch(TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1), 3)
    assert epoch(TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1), 3) == first
    assert epoch(TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1), 4) != first
    assert epoch(TokenBucketSampler(src, tgt, MAX_TOKENS, seed=2), 3) != first


def test_resume_yields_exactly_the_remaining_batches(lengths):
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1)
    sampler.set_epoch(2)
    full, seen = list(sampler), []
    it = iter(sampler)
    for _ in range(7):
        seen.append(next(it))
    state = sampler.state_dict()
    assert state == {"epoch": 2, "position": 7}
    resumed = TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop re-entering the saved epoch keeps the position
    assert seen + list(resumed) == full
    assert list(resumed) == full  # the next pass over the same epoch starts again from its beginning
    resumed.set_epoch(3)
    assert resumed.state_dict() == {"epoch": 3, "position": 0}


def test_resume_at_the_end_of_an_epoch_yields_nothing(lengths):
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1)
    n = len(epoch(sampler, 0))
    resumed = TokenBucketSampler(src, tgt, MAX_TOKENS, seed=1)
    resumed.load_state_dict(sampler.state_dict())
    assert sampler.state_dict()["position"] == n and list(resumed) == []


@pytest.mark.parametrize("replicas", [2, 3, 7])
def test_ddp_shards_are_disjoint_covering_and_balanced(lengths, replicas):
    src, tgt = lengths
    samplers = [
        TokenBucketSampler(src, tgt, MAX_TOKENS, 5, num_replicas=replicas, rank=r) for r in range(replicas)
    ]
    shards = [epoch(s, 1) for s in samplers]
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank
    flat = [i for s in shards for b in s for i in b]
    assert sorted(flat) == list(range(len(src)))  # every example exactly once, none repeated
    assert all(cost(b, src, tgt) <= MAX_TOKENS or len(b) == 1 for s in shards for b in s)
    loads = [sum(cost(b, src, tgt) for b in s) for s in shards]
    assert max(loads) - min(loads) <= max(MAX_TOKENS, 500 + 1)


def test_unshuffled_batches_follow_length(lengths):
    src, tgt = lengths
    batches = list(TokenBucketSampler(src, tgt, MAX_TOKENS, seed=0, shuffle=False))
    widths = [int(example_costs(src[b], tgt[b]).max()) for b in batches]
    assert widths == sorted(widths)


def test_eval_batches_restore_input_order():
    rng = np.random.default_rng(3)
    src_ids = [list(rng.integers(4, 50, size=n)) for n in rng.integers(1, 30, size=200)]
    tgt_ids = [list(rng.integers(4, 50, size=n)) for n in rng.integers(1, 30, size=200)]
    batches = list(eval_batches(src_ids, tgt_ids, max_tokens=120))
    order = torch.cat([b.indices for b in batches]).tolist()
    assert sorted(order) == list(range(200))
    widths = [b.src.size(1) for b in batches]
    assert widths[0] == max(widths)  # longest first
    restored = [None] * 200
    for b in batches:
        assert b.src.numel() <= 120 or len(b) == 1
        for row, i in enumerate(b.indices.tolist()):
            restored[i] = b.src[row, : b.src_lengths[row] - 1].tolist()
    assert restored == [list(map(int, s)) for s in src_ids]
    assert all(b.tgt_in is None for b in eval_batches(src_ids, None, 120))


def test_fewer_examples_than_ranks_still_covers_everything():
    src = tgt = np.array([3, 4])
    shards = [list(TokenBucketSampler(src, tgt, 100, 0, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in shards for b in s for i in b) == [0, 1]
    assert sorted(len(s) for s in shards) == [0, 1, 1]
