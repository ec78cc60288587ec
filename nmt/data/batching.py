"""Token-bucket batching: similar lengths together, at most ``max_tokens`` per batch padding included.

Batch cost = n_sentences * max(max_src_len + 1, max_tgt_len + 1) (the +1 is EOS on the source and BOS/EOS on
the target), i.e. the size of the larger padded tensor. Everything works on numpy length arrays; the only
per-example objects are the int arrays themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nmt.vocab import BOS_ID, EOS_ID, PAD_ID

CHUNK_BATCHES = 100  # a shuffled chunk holds about this many batches' worth of examples before sorting


@dataclass
class Batch:
    """One padded batch. Rows keep ``indices`` so outputs can be put back in input order."""

    src: torch.Tensor  # [batch, src_len] LongTensor: pieces + EOS, padded with PAD_ID
    src_lengths: torch.Tensor  # [batch] LongTensor: real source lengths, EOS included
    tgt_in: torch.Tensor | None  # [batch, tgt_len] LongTensor: BOS + pieces (teacher-forcing input)
    tgt_out: torch.Tensor | None  # [batch, tgt_len] LongTensor: pieces + EOS (what the decoder must predict)
    indices: torch.Tensor  # [batch] LongTensor: row numbers in the split

    @property
    def src_mask(self) -> torch.Tensor:
        """[batch, src_len] bool, True on real tokens (EOS included), False on padding."""
        positions = torch.arange(self.src.size(1), device=self.src.device)
        return positions.unsqueeze(0) < self.src_lengths.unsqueeze(1)

    @property
    def n_tgt_tokens(self) -> int:
        """Real target tokens to predict (EOS included), 0 without targets."""
        return 0 if self.tgt_out is None else int((self.tgt_out != PAD_ID).sum())

    def __len__(self) -> int:
        return self.src.size(0)

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            move(self.src), move(self.src_lengths), move(self.tgt_in), move(self.tgt_out), move(self.indices)
        )


def _pad(seqs: Sequence[Sequence[int]], prefix: list[int], suffix: list[int]) -> torch.Tensor:
    lengths = [len(s) + len(prefix) + len(suffix) for s in seqs]
    out = np.full((len(seqs), max(lengths, default=0)), PAD_ID, dtype=np.int64)
    for row, (seq, n) in enumerate(zip(seqs, lengths)):
        out[row, :n] = [*prefix, *seq, *suffix]
    return torch.from_numpy(out)


def collate(
    src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]] | None, indices: Sequence[int]
) -> Batch:
    """Pad piece-id lists (no specials) into a :class:`Batch`: src + EOS, BOS + tgt, tgt + EOS."""
    src = _pad(src_ids, [], [EOS_ID])
    src_lengths = torch.tensor([len(s) + 1 for s in src_ids], dtype=torch.long)
    tgt_in = tgt_out = None
    if tgt_ids is not None:
        tgt_in, tgt_out = _pad(tgt_ids, [BOS_ID], []), _pad(tgt_ids, [], [EOS_ID])
    return Batch(src, src_lengths, tgt_in, tgt_out, torch.as_tensor(np.asarray(indices, dtype=np.int64)))


def example_costs(src_lens: np.ndarray, tgt_lens: np.ndarray | None) -> np.ndarray:
    """Per-example padded width: max(src_len + 1, tgt_len + 1) (src_len + 1 without targets)."""
    costs = np.asarray(src_lens, dtype=np.int64) + 1
    if tgt_lens is not None:
        costs = np.maximum(costs, np.asarray(tgt_lens, dtype=np.int64) + 1)
    return costs


def pack(order: np.ndarray, costs: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut ``order`` (example indices, ascending cost) greedily into batches of cost <= max_tokens.

    With ascending costs, a batch starting at i that takes k examples costs k * costs[order[i + k - 1]],
    which grows with k, so the longest valid k is the count of a prefix of that sequence. A single
    example above max_tokens gets a batch of its own.
    """
    sorted_costs = costs[order]
    batches, i, n = [], 0, len(order)
    while i < n:
        window = sorted_costs[i : i + max(1, max_tokens // int(sorted_costs[i]))]
        k = max(1, int(np.count_nonzero(np.arange(1, len(window) + 1) * window <= max_tokens)))
        batches.append(order[i : i + k])
        i += k
    return batches


class TokenBucketSampler:
    """Yields lists of example indices, one per batch, for one rank of (possibly) distributed training.

    Per epoch, with a numpy Generator seeded from (seed, epoch) only: shuffle the examples, cut them into
    chunks of about ``CHUNK_BATCHES`` batches, sort each chunk by length (ties stay in shuffled order), pack
    batches under ``max_tokens``, and shuffle the batch order. ``shuffle=False`` sorts the whole split once
    and keeps batches in length order.

    Sharding (``num_replicas > 1``): every rank computes the same global batch list. When its length is not
    a multiple of ``num_replicas``, the batches with the most sentences are halved (a half never costs more
    than the whole) until it is, so each rank gets exactly the same number of batches and every example is
    used exactly once per epoch across ranks: nothing is repeated or dropped. Then, step by step (one batch
    per rank per step), the costliest batch of the step goes to the rank with the fewest tokens so far,
    which keeps per-rank token totals within one batch of each other. Only when the split has fewer
    examples than ranks do some ranks get no batch.
    """

    def __init__(
        self,
        src_lens: np.ndarray,
        tgt_lens: np.ndarray,
        max_tokens: int,
        seed: int,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.costs = example_costs(src_lens, tgt_lens)
        self.max_tokens, self.seed, self.shuffle = max_tokens, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._position = 0  # batches of this epoch handed out (and so consumed, for state_dict)
        self._skip = 0  # batches to skip at the next iteration (set by load_state_dict)
        self._plan: tuple[int, list[np.ndarray]] | None = None  # (epoch, this rank's batches)

    # --------------------------------------------------------------------------------------- planning
    def _global_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        n = len(self.costs)
        if not self.shuffle:
            return pack(np.argsort(self.costs, kind="stable"), self.costs, self.max_tokens)
        per_batch = max(1, self.max_tokens // max(1, int(self.costs.mean()))) if n else 1
        chunk = CHUNK_BATCHES * per_batch
        perm = rng.permutation(n)
        batches: list[np.ndarray] = []
        for start in range(0, n, chunk):
            part = perm[start : start + chunk]
            batches += pack(part[np.argsort(self.costs[part], kind="stable")], self.costs, self.max_tokens)
        return [batches[i] for i in rng.permutation(len(batches))]

    def _even_out(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Halve the largest batches until the count divides by num_replicas (when there are enough examples)."""
        while len(batches) % self.num_replicas:
            sizes = np.array([len(b) for b in batches])
            big = int(sizes.argmax())
            if sizes[big] < 2:
                break
            half = len(batches[big]) // 2
            batches[big : big + 1] = [batches[big][:half], batches[big][half:]]
        return batches

    def _assign(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """This rank's batches: per step of num_replicas batches, costliest to the least-loaded rank."""
        if self.num_replicas == 1:
            return batches
        costs = np.array([len(b) * int(self.costs[b].max()) for b in batches])
        load = np.zeros(self.num_replicas, dtype=np.int64)
        mine = []
        for start in range(0, len(batches), self.num_replicas):
            step = np.arange(start, min(start + self.num_replicas, len(batches)))
            by_cost = step[np.argsort(-costs[step], kind="stable")]
            ranks = np.argsort(load, kind="stable")[: len(step)]
            load[ranks] += costs[by_cost]
            hit = np.flatnonzero(ranks == self.rank)
            if len(hit):
                mine.append(batches[by_cost[hit[0]]])
        return mine

    def _batches(self) -> list[np.ndarray]:
        if self._plan is None or self._plan[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._plan = (self.epoch, self._assign(self._even_out(self._global_batches(rng))))
        return self._plan[1]

    # -------------------------------------------------------------------------------------- iteration
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce; a pending resume applies only to its own epoch."""
        if epoch != self.epoch:
            self.epoch, self._position, self._skip = epoch, 0, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        start, self._skip = self._skip, 0
        for i in range(start, len(batches)):
            self._position = i + 1
            yield batches[i].tolist()

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch."""
        return len(self._batches())

    def state_dict(self) -> dict:
        """``{"epoch": e, "position": batches of epoch e already handed out}``."""
        return {"epoch": self.epoch, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration (of ``state["epoch"]``) starts after ``state["position"]`` batches."""
        self.epoch, self._position, self._skip = (
            int(state["epoch"]),
            int(state["position"]),
            int(state["position"]),
        )


def eval_batches(
    src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]] | None, max_tokens: int
) -> Iterator[Batch]:
    """Batches for evaluation/translation, longest first (memory peaks early), under ``max_tokens``.

    ``Batch.indices`` are positions in ``src_ids``; scatter outputs back with them to restore input order.
    """
    src_lens = np.fromiter((len(s) for s in src_ids), dtype=np.int64, count=len(src_ids))
    tgt_lens = None
    if tgt_ids is not None:
        tgt_lens = np.fromiter((len(t) for t in tgt_ids), dtype=np.int64, count=len(tgt_ids))
    costs = example_costs(src_lens, tgt_lens)
    for batch in reversed(pack(np.argsort(costs, kind="stable"), costs, max_tokens)):
        rows = batch.tolist()
        tgt = None if tgt_ids is None else [tgt_ids[i] for i in rows]
        yield collate([src_ids[i] for i in rows], tgt, rows)
