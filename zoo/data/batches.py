"""Batches as Keras passes them to ``train_step``: one home for taking them apart."""

from __future__ import annotations

from typing import Any

__all__ = ["unpack_batch"]


def unpack_batch(data: Any) -> tuple[Any, Any | None]:
    """``(inputs, labels or None)`` of a batch: the one home for batch unpacking.

    A batch is ``inputs``, ``(inputs,)``, ``(inputs, labels)`` or ``(inputs, labels,
    sample_weight)`` (Keras' ``x, y, sample_weight`` convention; lists count as tuples;
    sample weights are dropped). Anything else that is not a tuple or list, such as a dict
    of named inputs, is the inputs.
    """
    if not isinstance(data, (tuple, list)):
        return data, None
    if not 1 <= len(data) <= 3:
        raise ValueError(
            f"a batch is inputs, (inputs,), (inputs, labels) or (inputs, labels, "
            f"sample_weight); got a {type(data).__name__} of {len(data)} items"
        )
    return data[0], (data[1] if len(data) > 1 else None)
