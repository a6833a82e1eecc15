"""The DDPM denoiser: a U-Net ε_θ(x_t, t[, y]) (Ho et al. 2020, Appendix B; after the
PixelCNN++ / Wide-ResNet U-Net of Salimans et al. 2017 and Ronneberger et al. 2015).

- t enters through a sinusoidal embedding (Vaswani et al. 2017) and a two-layer MLP; a class
  label, when the model is conditional, through a learned embedding added to it (index
  ``num_classes`` is the "no label" token classifier-free guidance trains with; Ho & Salimans
  2022);
- every level holds residual blocks (GroupNorm, swish, 3x3 conv, plus the projected embedding;
  Wu & He 2018 for GroupNorm), and self-attention (one head per 32 channels is not needed at
  this size: ``attention_heads``) at the resolutions listed in ``attention_resolutions``;
- the last convolution is zero-initialised, so an untrained denoiser predicts ε = 0 and
  training starts from the identity x̂_0 = x_t / √ᾱ_t.

Every size is an argument: ``widths`` (one per level; each level but the last halves the
resolution), ``blocks_per_level``, ``attention_resolutions``. Odd sizes are fine (7x7 is
halved to 4x4 and cropped back on the way up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import layers, ops

from zoo.networks import Initializers

__all__ = ["SinusoidalEmbedding", "build_unet", "norm_groups"]


@keras.saving.register_keras_serializable(package="zoo")
class SinusoidalEmbedding(layers.Layer):
    """Integer steps t [N] -> [N, dim]: sin and cos of t / 10000^(2i/dim) (Vaswani et al.
    2017, sec. 3.5; the DDPM time embedding)."""

    def __init__(self, dim: int, max_period: float = 10_000.0, **kwargs: Any):
        super().__init__(**kwargs)
        if int(dim) < 2 or int(dim) % 2:
            raise ValueError(f"the time embedding needs an even dim >= 2; got {dim}")
        self.dim, self.max_period = int(dim), float(max_period)

    def call(self, t: Any) -> Any:
        half = self.dim // 2
        exponents = ops.arange(half, dtype="float32") / float(half)
        frequencies = ops.exp(-math.log(self.max_period) * exponents)
        angles = ops.cast(ops.reshape(t, (-1, 1)), "float32") * frequencies[None, :]
        return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (input_shape[0], self.dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


def norm_groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups`` (GroupNorm needs one)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def _norm(channels: int, groups: int, name: str) -> layers.Layer:
    return layers.GroupNormalization(norm_groups(channels, groups), epsilon=1e-5, name=name)


def _residual_block(
    x: Any, embedding: Any, width: int, groups: int, dropout: float, init: Initializers, name: str
) -> Any:
    """GroupNorm-swish-conv, + Dense(embedding), GroupNorm-swish-dropout-conv, + skip."""
    h = layers.Activation("swish", name=f"{name}_act1")(
        _norm(x.shape[-1], groups, f"{name}_gn1")(x)
    )
    h = layers.Conv2D(width, 3, padding="same", kernel_initializer=init(), name=f"{name}_conv1")(h)
    e = layers.Dense(width, kernel_initializer=init(), name=f"{name}_embedding")(embedding)
    h = h + layers.Reshape((1, 1, width), name=f"{name}_broadcast")(e)
    h = layers.Activation("swish", name=f"{name}_act2")(_norm(width, groups, f"{name}_gn2")(h))
    if dropout:
        h = layers.Dropout(dropout, name=f"{name}_dropout")(h)
    h = layers.Conv2D(width, 3, padding="same", kernel_initializer=init(), name=f"{name}_conv2")(h)
    if x.shape[-1] != width:
        x = layers.Conv2D(width, 1, kernel_initializer=init(), name=f"{name}_skip")(x)
    return layers.Add(name=f"{name}_out")([x, h])


def _attention_block(x: Any, groups: int, heads: int, init: Initializers, name: str) -> Any:
    """Self-attention over the H x W positions with a residual connection."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[-1]
    h = _norm(channels, groups, f"{name}_gn")(x)
    h = layers.Reshape((height * width, channels), name=f"{name}_flatten")(h)
    h = layers.MultiHeadAttention(
        heads, max(channels // heads, 1), kernel_initializer=init(), name=f"{name}_mha"
    )(h, h)
    h = layers.Reshape((height, width, channels), name=f"{name}_unflatten")(h)
    return layers.Add(name=f"{name}_out")([x, h])


def build_unet(
    image_shape: Sequence[int] = (28, 28, 1),
    widths: Sequence[int] = (32, 64, 64),
    blocks_per_level: int = 1,
    attention_resolutions: Sequence[int] = (7,),
    attention_heads: int = 1,
    groups: int = 8,
    dropout: float = 0.0,
    num_classes: int = 0,
    seed: int | None = None,
    name: str = "denoiser",
) -> keras.Model:
    """A U-Net ε_θ taking ``[x_t [N,H,W,C], t [N] int32]`` (``+ labels [N] int32`` in
    [0, num_classes], num_classes = no label, when ``num_classes > 0``) -> ε [N,H,W,C].

    ``attention_resolutions`` lists the spatial sizes (the smaller of height and width)
    whose levels get self-attention, as the DDPM U-Net does at 16x16 of 32x32."""
    height, width_px, channels = (int(s) for s in image_shape)
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1 or int(blocks_per_level) < 1:
        raise ValueError(
            f"a U-Net needs at least one level of positive width and blocks_per_level >= 1; "
            f"got widths={widths}, blocks_per_level={blocks_per_level}"
        )
    embed_dim = 4 * widths[0]
    init = Initializers(seed)
    x_in = keras.Input((height, width_px, channels), name="x_t")
    t_in = keras.Input((), dtype="int32", name="t")
    inputs = [x_in, t_in]
    embedding = SinusoidalEmbedding(widths[0], name="time_sinusoid")(t_in)
    embedding = layers.Dense(embed_dim, "swish", kernel_initializer=init(), name="time_dense1")(
        embedding
    )
    embedding = layers.Dense(embed_dim, kernel_initializer=init(), name="time_dense2")(embedding)
    if num_classes:
        labels_in = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels_in)
        label_embedding = layers.Embedding(
            num_classes + 1,
            embed_dim,
            embeddings_initializer=keras.initializers.RandomUniform(seed=init.next_seed()),
            name="label_embedding",
        )
        embedding = layers.Add(name="condition")([embedding, label_embedding(labels_in)])
    embedding = layers.Activation("swish", name="condition_act")(embedding)

    h = layers.Conv2D(widths[0], 3, padding="same", kernel_initializer=init(), name="conv_in")(x_in)
    skips, sizes = [h], []
    for level, width in enumerate(widths):
        size = min(h.shape[1], h.shape[2])
        for block in range(blocks_per_level):
            h = _residual_block(
                h, embedding, width, groups, dropout, init, f"down{level}_res{block}"
            )
            if size in attention_resolutions:
                h = _attention_block(h, groups, attention_heads, init, f"down{level}_attn{block}")
            skips.append(h)
        if level < len(widths) - 1:
            sizes.append((h.shape[1], h.shape[2]))
            h = layers.Conv2D(
                width,
                3,
                strides=2,
                padding="same",
                kernel_initializer=init(),
                name=f"down{level}_sample",
            )(h)
            skips.append(h)
    h = _residual_block(h, embedding, widths[-1], groups, dropout, init, "mid_res0")
    h = _attention_block(h, groups, attention_heads, init, "mid_attn")
    h = _residual_block(h, embedding, widths[-1], groups, dropout, init, "mid_res1")
    for level in reversed(range(len(widths))):
        width = widths[level]
        size = min(h.shape[1], h.shape[2])
        for block in range(blocks_per_level + 1):
            h = layers.Concatenate(name=f"up{level}_cat{block}")([h, skips.pop()])
            h = _residual_block(h, embedding, width, groups, dropout, init, f"up{level}_res{block}")
            if size in attention_resolutions:
                h = _attention_block(h, groups, attention_heads, init, f"up{level}_attn{block}")
        if level > 0:
            target = sizes.pop()
            h = layers.UpSampling2D(2, name=f"up{level}_upsample")(h)
            extra = (h.shape[1] - target[0], h.shape[2] - target[1])
            if any(extra):
                h = layers.Cropping2D(((0, extra[0]), (0, extra[1])), name=f"up{level}_crop")(h)
            h = layers.Conv2D(
                width, 3, padding="same", kernel_initializer=init(), name=f"up{level}_conv"
            )(h)
    h = layers.Activation("swish", name="out_act")(_norm(widths[0], groups, "out_gn")(h))
    eps = layers.Conv2D(
        channels, 3, padding="same", kernel_initializer="zeros", name="conv_out", dtype="float32"
    )(h)
    return keras.Model(inputs, eps, name=name)
