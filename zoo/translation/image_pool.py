"""The history of generated images that CycleGAN's discriminators learn from (Shrivastava
et al., 2017, §2.3; Zhu et al., 2017, §4): each discriminator sees a mix of the generator's
newest images and older ones, which damps the oscillation of the two players.

The pool holds up to ``pool_size`` (50 in both papers) images in non-trainable variables,
so it lives in the graph, in checkpoints and in ``.keras`` files. :meth:`ImagePool.query`
takes a batch of generated images and walks it image by image, as the reference code:

- while the pool is not full, the image is stored and returned as it is;
- once it is full, with probability 1/2 the image is returned as it is; otherwise a stored
  image, chosen uniformly, is returned in its place, and the new image takes its slot.

Randomness comes from the caller (the trainer's :meth:`zoo.trainers.Trainer.uniform`,
which draws the global batch's values and hands each replica its slice). Under
``tf.distribute`` every replica gathers the global batch and its draws, runs the same walk
over it (so every replica's pool holds the same images, what one device would hold) and
keeps its own slice of the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import layers

__all__ = ["ImagePool"]

#: The chance that a generated image is swapped for a stored one once the pool is full.
SWAP_PROBABILITY = 0.5


@keras.saving.register_keras_serializable(package="zoo")
class ImagePool(layers.Layer):
    """A history of ``pool_size`` images of ``image_shape``; ``pool_size`` 0 turns it off
    (:meth:`query` returns its input)."""

    def __init__(self, image_shape: Sequence[int], pool_size: int = 50, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(pool_size, int) or pool_size < 0:
            raise ValueError(f"pool_size must be an integer >= 0 (0 = no pool); got {pool_size!r}")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.pool_size = pool_size
        # only_first_replica: every replica writes the same values (see the module doc)
        self.images = self.add_weight(
            shape=(pool_size, *self.image_shape), initializer="zeros", trainable=False,
            aggregation="only_first_replica", name="images",
        )  # fmt: skip
        self.count = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False,
            aggregation="only_first_replica", name="count",
        )  # fmt: skip
        self.built = True

    def query(self, images: Any, draw_uniform: Callable[..., tf.Tensor]) -> tf.Tensor:
        """The batch the discriminator sees in place of ``images`` [N, *image_shape]
        (see the module doc); updates the pool. ``draw_uniform(shape)`` gives uniform [0, 1)
        values whose first axis runs over the batch (two per image: swap or not, which slot)."""
        images = tf.cast(images, "float32")
        if self.pool_size == 0:
            return images
        local = tf.shape(images)[0]
        draws = tf.cast(draw_uniform((local, 2)), "float32")
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return self._walk(images, draws)
        everyone = context.all_gather(images, axis=0)
        all_draws = context.all_gather(draws, axis=0)
        sizes = context.all_gather(tf.reshape(local, (1,)), axis=0)
        rank = context.replica_id_in_sync_group
        offset = tf.reduce_sum(tf.where(tf.range(tf.size(sizes)) < rank, sizes, 0))
        returned = self._walk(everyone, all_draws)
        return tf.gather(returned, offset + tf.range(local))

    def _walk(self, images: tf.Tensor, draws: tf.Tensor) -> tf.Tensor:
        size = self.pool_size
        n = tf.shape(images)[0]

        def body(i: tf.Tensor, pool: tf.Tensor, count: tf.Tensor, out: tf.TensorArray) -> tuple:
            image = images[i]
            filling = count < size
            chosen = tf.minimum(tf.cast(draws[i, 1] * size, "int32"), size - 1)
            slot = tf.where(filling, count, chosen)
            swap = tf.logical_and(tf.logical_not(filling), draws[i, 0] < SWAP_PROBABILITY)
            stored = pool[slot]
            written = tf.where(tf.logical_or(filling, swap), image, stored)
            pool = tf.tensor_scatter_nd_update(pool, [[slot]], written[None])
            out = out.write(i, tf.where(swap, stored, image))
            return i + 1, pool, count + tf.cast(filling, "int32"), out

        _, pool, count, out = tf.while_loop(
            lambda i, *_: i < n,
            body,
            (
                tf.constant(0),
                tf.convert_to_tensor(self.images.value),
                tf.convert_to_tensor(self.count.value),
                tf.TensorArray("float32", size=n, element_shape=self.image_shape),
            ),
        )
        self.images.assign(pool)
        self.count.assign(count)
        return tf.reshape(out.stack(), tf.concat([[n], self.image_shape], 0))

    def call(self, inputs: Any) -> Any:
        """The images unchanged (the pool acts through :meth:`query` in ``train_step``)."""
        return inputs

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "pool_size": self.pool_size,
        }
