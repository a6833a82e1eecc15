"""CycleGAN's learning-rate schedule (Zhu et al., 2017, §7.1): "the same learning rate for
the first 100 epochs and linearly decay the rate to zero over the next 100 epochs", per
optimizer step here. A recipe asks for it as ``learning_rate = {schedule = "linear_decay",
initial = 2e-4}``: the runner passes ``decay_steps`` = the run's steps, and the rate holds
for the first half (``hold_fraction=0.5``) unless ``hold_steps`` says otherwise.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["LinearDecay"]


@keras.saving.register_keras_serializable(package="zoo")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``initial_learning_rate`` for steps ``0 .. hold_steps``, then linear to 0 at
    ``decay_steps`` (the total) and 0 after it:
    ``lr(t) = initial * (1 - clip((t - hold) / (decay_steps - hold), 0, 1))``.

    ``hold_steps`` defaults to ``round(hold_fraction * decay_steps)``."""

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        hold_steps: int | None = None,
        hold_fraction: float = 0.5,
        name: str = "LinearDecay",
    ):
        super().__init__()
        if not isinstance(decay_steps, int) or decay_steps < 1:
            raise ValueError(f"decay_steps must be an integer >= 1; got {decay_steps!r}")
        if not 0.0 <= hold_fraction <= 1.0:
            raise ValueError(f"hold_fraction must be in [0, 1]; got {hold_fraction}")
        if hold_steps is None:
            hold_steps = round(hold_fraction * decay_steps)
        if not isinstance(hold_steps, int) or not 0 <= hold_steps <= decay_steps:
            raise ValueError(
                f"hold_steps must be an integer in [0, decay_steps={decay_steps}]; got "
                f"{hold_steps!r}"
            )
        if not initial_learning_rate > 0:
            raise ValueError(f"initial_learning_rate must be > 0; got {initial_learning_rate}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.hold_steps = hold_steps
        self.hold_fraction = float(hold_fraction)
        self.name = name

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        span = float(max(self.decay_steps - self.hold_steps, 1))
        done = ops.clip((step - float(self.hold_steps)) / span, 0.0, 1.0)
        return self.initial_learning_rate * (1.0 - done)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "hold_steps": self.hold_steps,
            "hold_fraction": self.hold_fraction,
            "name": self.name,
        }
