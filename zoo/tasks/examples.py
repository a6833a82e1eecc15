"""What a model takes as examples: images or sequences. One home for stacking, shape and
range checks of user-given examples (calibration data, parity batches), so every task
declaration that takes images checks them the same way.

An :class:`ExampleKind` is data about the input, not about the model's class: a new
model that takes images uses :class:`Images` and inherits every check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from zoo.data.batches import unpack_batch

__all__ = ["ExampleKind", "Images", "Sequences", "stack_examples"]


def stack_examples(data: Any, rank: int, what: str) -> np.ndarray:
    """float32 ``[N, ...]`` from an array, a list, or a ``tf.data.Dataset`` of examples or
    ``(examples, labels)`` (batched or not); ``rank`` is one example's rank."""
    if hasattr(data, "as_numpy_iterator"):
        parts = []
        for element in data.as_numpy_iterator():
            element = np.asarray(unpack_batch(element)[0])
            parts.append(element[None] if element.ndim == rank else element)
        if not parts:
            raise ValueError(f"the dataset of {what} is empty")
        array = np.concatenate(parts).astype(np.float32)
    else:
        array = np.asarray(data, dtype=np.float32)
    if array.ndim == rank:
        array = array[None]
    return array


@dataclass(frozen=True)
class ExampleKind:
    """The examples a model scores, reconstructs or translates: their request tensor name
    (``key``, TF Serving's input name) and the shape of one example."""

    shape: tuple[int, ...]
    key: ClassVar[str] = "examples"
    #: An image folder can hold such examples (``zoo export --calibration FOLDER``).
    from_image_folder: ClassVar[bool] = False

    def describe(self) -> str:
        """The examples in words, for error messages: ``float32 [N, 28, 28, 1] in [0, 1]``."""
        return f"float32 [N, {', '.join(map(str, self.shape))}]"

    def check(self, data: Any, what: str = "calibration") -> np.ndarray:
        """float32 ``[N, *shape]`` from ``data``, or a one-line ValueError saying the fix."""
        array = stack_examples(data, len(self.shape), f"{what} {self.key}")
        if tuple(array.shape[1:]) != tuple(self.shape):
            raise ValueError(
                f"{what} {self.key} have shape {tuple(array.shape[1:])} per example but the "
                f"model takes {tuple(self.shape)}; {self.reshape_hint()}"
            )
        if array.shape[0] == 0:
            raise ValueError(f"{what} {self.key} are empty")
        self.check_values(array, what)
        return array

    def reshape_hint(self) -> str:
        return "reshape them"

    def check_values(self, array: np.ndarray, what: str) -> None:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what} {self.key} contain NaN or inf")

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` stand-in examples for parity and warmup when no data is given."""
        return rng.standard_normal((n, *self.shape)).astype(np.float32)

    def for_parity(self, batch: np.ndarray) -> np.ndarray:
        """The parity batch made to exercise what must be checked (e.g. masking)."""
        return batch

    def from_array(self, raw: np.ndarray) -> np.ndarray:
        """Examples from an array a user saved (an ``.npz`` entry), converted and checked."""
        return self.check(raw)


@dataclass(frozen=True)
class Images(ExampleKind):
    """Images float32 ``[H, W, C]`` in [0, 1]."""

    key: ClassVar[str] = "images"
    from_image_folder: ClassVar[bool] = True

    def describe(self) -> str:
        return f"{super().describe()} in [0, 1]"

    def reshape_hint(self) -> str:
        return (
            f"resize them, e.g. with zoo.data.from_numpy(images, image_shape={self.shape}, "
            "resize=True)"
        )

    def check_values(self, array: np.ndarray, what: str) -> None:
        if not np.all(np.isfinite(array)) or array.min() < -1e-6 or array.max() > 1 + 1e-6:
            raise ValueError(
                f"{what} images must be float32 in [0, 1]; got values in "
                f"[{np.nanmin(array):g}, {np.nanmax(array):g}] (divide uint8 images by 255)"
            )

    def random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(size=(n, *self.shape)).astype(np.float32)

    def from_array(self, raw: np.ndarray) -> np.ndarray:
        """uint8 or [0, 1] float images of any size, resized to ``shape``."""
        from zoo import data as zdata

        dataset = zdata.from_numpy(raw, image_shape=self.shape, resize=True)
        return self.check(dataset.batch(512))


@dataclass(frozen=True)
class Sequences(ExampleKind):
    """Multivariate sequences float32 ``[T, F]``; padded steps hold ``mask_value`` in
    every feature."""

    mask_value: float = 0.0
    key: ClassVar[str] = "sequences"

    def describe(self) -> str:
        return f"{super().describe()} padded with mask_value={self.mask_value:g}"

    def reshape_hint(self) -> str:
        steps, features = self.shape
        return (
            f"({steps} steps, {features} features): pad or cut them with "
            f"zoo.data.pad_sequences(..., maxlen={steps}) or window them with "
            f"zoo.data.sliding_windows(series, size={steps})"
        )

    def check_values(self, array: np.ndarray, what: str) -> None:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what} sequences contain NaN or inf; pad with mask_value instead")

    def for_parity(self, batch: np.ndarray) -> np.ndarray:
        """Example 1 padded at the end (second half), example 2 at the start (first
        quarter), so parity checks masking."""
        batch = batch.copy()
        steps = batch.shape[1]
        if len(batch) > 1:
            batch[1, steps // 2 :] = self.mask_value
        if len(batch) > 2:
            batch[2, : max(1, steps // 4)] = self.mask_value
        return batch


def shape_tuple(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)
