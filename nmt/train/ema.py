"""An exponential moving average of the model's weights, kept beside the trained ones.

After update k the average moves towards the weights: ``avg <- d_k * avg + (1 - d_k) * w`` with
``d_k = min(decay, (1 + k) / (10 + k))``. The warm-up of ``d_k`` (small early, ``decay`` later) keeps the random
initialisation from dominating the average of a short run; with a constant ``decay`` of 0.999 a 3,000-update run
would still carry 5 % of its initial weights at the end.

Why: a run that stops on a wall-clock budget ends without the last annealing; the averaged weights are what
checkpoint averaging would give, but at every validation and without options at translation time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def ema_decay_at(step: int, decay: float) -> float:
    """The decay applied after update ``step`` (1-based)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """The averaged copy of ``model``'s floating-point parameters and buffers (on the model's device)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = {
            name: value.detach().clone()
            for name, value in model.state_dict().items()
            if value.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold in the weights after update ``step`` (1-based)."""
        weight = 1.0 - ema_decay_at(step, self.decay)
        current = model.state_dict()
        for name, average in self.average.items():
            average.lerp_(current[name], weight)

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``model``'s state dict with the averaged values in place of the trained ones (a new dict)."""
        return {**model.state_dict(), **self.average}

    @contextlib.contextmanager
    def swapped_into(self, model: torch.nn.Module) -> Iterator[None]:
        """Run the block with ``model`` holding the averaged weights; the trained ones come back afterwards."""
        trained = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.weights(model))
        try:
            yield
        finally:
            model.load_state_dict(trained)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.average)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = self.average.keys() - state.keys()
        if missing:
            raise KeyError(f"the weight average lacks {sorted(missing)}")
        with torch.no_grad():
            for name, average in self.average.items():
                average.copy_(state[name])
