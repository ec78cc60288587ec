"""The chapter's opening arguments, made runnable (``notebooks/rnn_basics.ipynb``).

1. Predict the digit that follows a run such as [0, 1, 2, 3] → 4 or [9, 8, 7, 6] → 5, with three inputs:
   summed one-hot vectors (variable length, but order is lost: [2, 3] and [3, 2] collide), concatenated one-hot
   vectors (order kept, but a fixed length only), and an RNN (both).
2. Vanishing / exploding gradients: ``||d y_T / d x_{T-k}||`` for k = 1 … 100 in a tanh RNN, an LSTM and a GRU.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from nmt.recipes.common import Batch, SequenceClassifier, accuracy_of, fit, make_rnn
from nmt.recipes.config import Cell, RecipeTrainConfig

N_DIGITS = 10


def digit_runs(length: int) -> tuple[list[list[int]], list[int]]:
    """Every rising and falling run of ``length`` consecutive digits (mod 10), and the digit that comes next.

    ``length=4`` gives 20 runs, among them [0, 1, 2, 3] → 4 and [9, 8, 7, 6] → 5.
    """
    runs, following = [], []
    for start in range(N_DIGITS):
        for step in (1, -1):
            runs.append([(start + step * i) % N_DIGITS for i in range(length)])
            following.append((start + step * length) % N_DIGITS)
    return runs, following


def one_hot(run: list[int]) -> np.ndarray:
    """``[len(run), 10]``: row i is the one-hot vector of digit ``run[i]``."""
    return np.eye(N_DIGITS, dtype=np.float32)[run]


def summed_one_hot(runs: list[list[int]]) -> np.ndarray:
    """``[n_runs, 10]``: the sum of each run's one-hot vectors. Any length fits; the order is gone."""
    return np.stack([one_hot(run).sum(0) for run in runs])


def concatenated_one_hot(runs: list[list[int]], length: int) -> np.ndarray:
    """``[n_runs, 10 * length]``: the one-hot vectors side by side. Order is kept, but only ``length`` fits."""
    for run in runs:
        if len(run) != length:
            raise ValueError(
                f"concatenated one-hot input has room for {length} digits, got {len(run)}: {run}"
            )
    return np.stack([one_hot(run).reshape(-1) for run in runs])


def decayed_sum(run: list[int], decay: float = 0.5) -> np.ndarray:
    """The chapter's bridge to an RNN: h_t = decay * (h_{t-1} + onehot(x_t)), a fixed-size state that keeps order.

    [2] → 0.5 e2;  [2, 3] → 0.25 e2 + 0.5 e3;  [3, 2] → 0.5 e2 + 0.25 e3.
    """
    h = np.zeros(N_DIGITS)
    for digit in run:
        h = decay * (h + np.eye(N_DIGITS)[digit])
    return h


def collisions(features: np.ndarray, targets: list[int]) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, with identical features but different targets: no function of the features fits both."""
    pairs = []
    for i in range(len(features)):
        for j in range(i + 1, len(features)):
            if targets[i] != targets[j] and np.array_equal(features[i], features[j]):
                pairs.append((i, j))
    return pairs


def train_linear(
    features: np.ndarray, targets: list[int], epochs: int = 300, seed: int = 0
) -> tuple[nn.Module, float]:
    """The book's one-layer network (weights ``[n_features, 10]`` + bias) fitted on all runs; training accuracy."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(features), torch.tensor(targets)
    model = nn.Linear(x.shape[1], N_DIGITS)
    cfg = RecipeTrainConfig(epochs=epochs, lr=0.05, clip_norm=0.0)
    fit(model, lambda epoch: iter([((x,), y)]), nn.functional.cross_entropy, cfg, torch.device("cpu"))
    return model, accuracy_of(model, lambda: iter([((x,), y)]), torch.device("cpu"))


def run_batches(runs: list[list[int]], targets: list[int]) -> Iterator[Batch]:
    """One batch per run length (no padding needed): ``x [n, length, 10]``, ``y [n]``."""
    for length in sorted({len(r) for r in runs}):
        chosen = [i for i, r in enumerate(runs) if len(r) == length]
        x = torch.from_numpy(np.stack([one_hot(runs[i]) for i in chosen]))
        yield (x,), torch.tensor([targets[i] for i in chosen])


def train_rnn(
    runs: list[list[int]], targets: list[int], hidden_size: int = 32, epochs: int = 300, seed: int = 0
) -> tuple[nn.Module, float]:
    """A tanh RNN over the one-hot digits (any lengths, order kept), last output → 10 digits; training accuracy."""
    torch.manual_seed(seed)
    model = SequenceClassifier(N_DIGITS, N_DIGITS, Cell.rnn, hidden_size)
    cfg = RecipeTrainConfig(epochs=epochs, lr=0.01)
    fit(
        model, lambda epoch: run_batches(runs, targets), nn.functional.cross_entropy, cfg, torch.device("cpu")
    )
    return model, accuracy_of(model, lambda: run_batches(runs, targets), torch.device("cpu"))


@torch.no_grad()
def predict_next(model: nn.Module, runs: list[list[int]]) -> list[int]:
    """The RNN's next digit for each run (runs may differ in length)."""
    model.eval()
    return [int(model(torch.from_numpy(one_hot(run))[None]).argmax(-1)) for run in runs]


def gradient_norms(
    cell: Cell,
    steps: int = 100,
    hidden_size: int = 32,
    input_size: int = 8,
    batch: int = 16,
    gate_bias: float = 0.0,
    recurrent_gain: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``norms[k-1] = mean_b ||d (sum of y_T) / d x_{T-k}||`` for k = 1 … ``steps``: how far back a gradient reaches.

    One backward pass from the last output of an untrained ``cell`` over random inputs ``[batch, steps+1, input]``
    gives the gradient w.r.t. every input at once. ``gate_bias`` is added to the bias of the gate that keeps
    the old state (LSTM forget gate, GRU update gate z): open gates let the gradient through. ``recurrent_gain``
    replaces the hidden-to-hidden weights by ``gain * orthogonal`` matrices: gain > 1 makes a tanh RNN explode.
    """
    torch.manual_seed(seed)
    rnn = make_rnn(cell, input_size, hidden_size)
    with torch.no_grad():
        keep_gate = slice(
            hidden_size, 2 * hidden_size
        )  # rows of gate 2: LSTM (i, f, g, o) f; GRU (r, z, n) z
        if cell in (Cell.lstm, Cell.gru):
            rnn.bias_ih_l0[keep_gate] += gate_bias
        if recurrent_gain is not None:
            for block in rnn.weight_hh_l0.split(hidden_size):
                nn.init.orthogonal_(block, gain=recurrent_gain)
    x = torch.randn(batch, steps + 1, input_size, requires_grad=True)
    outputs, _ = rnn(x)
    outputs[:, -1].sum().backward()
    grad: Tensor = x.grad  # type: ignore[assignment]
    per_step = grad.norm(dim=2).mean(0)  # [steps+1], index i = input x_i
    return per_step.flip(0)[1:].numpy()  # lag k = 1 … steps
