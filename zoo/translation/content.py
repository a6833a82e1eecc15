"""The content loss of SRResNet / SRGAN (Ledig et al., 2017, §2.2.1), in a pluggable
feature space.

``content_loss(extractor)(hr, sr)`` -> per-example losses ``[batch]``, for images in
[-1, 1] (the range the generator works in, as in the paper):

- ``extractor=None``: pixel MSE, ``mean((hr - sr)^2)`` over pixels and channels, on the
  [-1, 1] range as in the paper (§3.2), so 4x the MSE of the same images in [0, 1]. The
  offline default: it needs no pretrained network.
- a Keras model: ``feature_scale^2 * mean((phi(hr) - phi(sr))^2)`` over the feature map,
  where ``phi`` takes images in [0, 1] (the images are mapped there first; a model needing
  its own preprocessing includes it, as :func:`vgg19_extractor` does). Ledig et al.'s VGG54
  loss rescales the VGG feature maps by 1/12.75 (``feature_scale``) "to obtain VGG losses
  of a scale that is comparable to the MSE loss"; the default for other extractors is 1.

:func:`vgg19_extractor` builds Keras' VGG19 (ImageNet weights from a local file: nothing is
downloaded) cut at ``block5_conv4`` (phi_5,4: the 4th convolution, after activation, before
the 5th max-pooling), with ImageNet's "caffe" preprocessing in front of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf
from keras import layers, ops

__all__ = [
    "VGG_FEATURE_SCALE",
    "CaffePreprocessing",
    "ContentLoss",
    "content_loss",
    "vgg19_extractor",
]

#: Ledig et al. (2017, §3.2): VGG feature maps are rescaled by 1/12.75.
VGG_FEATURE_SCALE = 1.0 / 12.75
#: ImageNet's per-channel means in BGR order, on 0-255 pixels (Keras' "caffe" mode).
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


class ContentLoss:
    """Per-example content loss between high-resolution targets and super-resolved images,
    both [N, H, W, C] in [-1, 1]; pixel MSE without an extractor (see the module notes).

    A plain object, not a Keras layer: a trainer holding one does not save the extractor's
    weights (a VGG19 is rebuilt from its weights file instead)."""

    def __init__(self, extractor: keras.Model | None = None, feature_scale: float = 1.0):
        if extractor is not None and not isinstance(extractor, keras.Model):
            raise TypeError(
                f"the content extractor must be a keras.Model (images in [0, 1] -> features) "
                f"or None for pixel MSE; got {type(extractor).__name__}"
            )
        if not feature_scale > 0:
            raise ValueError(f"feature_scale must be > 0; got {feature_scale}")
        self.extractor = extractor
        self.feature_scale = float(feature_scale)
        if extractor is not None:
            extractor.trainable = False

    @property
    def kind(self) -> str:
        return "pixel" if self.extractor is None else "features"

    def __call__(self, hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
        hr, sr = ops.cast(hr, "float32"), ops.cast(sr, "float32")
        if self.extractor is None:
            return _mean_square(hr - sr)
        # one pass over both batches (training=False: the examples do not interact)
        features = self.extractor(ops.concatenate([hr, sr], axis=0) * 0.5 + 0.5, training=False)
        features = ops.cast(features, "float32") * self.feature_scale
        n = ops.shape(hr)[0]
        return _mean_square(features[:n] - features[n:])


def _mean_square(x: tf.Tensor) -> tf.Tensor:
    """[batch]: the mean of x^2 over every non-batch axis."""
    return ops.mean(ops.reshape(ops.square(x), (ops.shape(x)[0], -1)), axis=1)


def content_loss(
    extractor: keras.Model | None = None, feature_scale: float = 1.0
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """``loss(hr, sr) -> [batch]`` (a :class:`ContentLoss`)."""
    return ContentLoss(extractor, feature_scale)


@keras.saving.register_keras_serializable(package="zoo")
class CaffePreprocessing(layers.Layer):
    """RGB images in [0, 1] -> BGR on 0-255 minus ImageNet's channel means (what
    ``keras.applications.vgg19.preprocess_input`` does, as a layer); grey images (one
    channel) are repeated to three first."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        if images.shape[-1] == 1:
            images = ops.repeat(images, 3, axis=-1)
        bgr = ops.flip(ops.cast(images, "float32"), axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(IMAGENET_BGR_MEAN, "float32")


def vgg19_extractor(
    weights_path: str | Path, layer: str = "block5_conv4", channels: int = 3
) -> keras.Model:
    """VGG19's features at ``layer`` (default ``block5_conv4``: Ledig et al.'s VGG54) for
    images in [0, 1] of any size (RGB, or grey with ``channels=1``), from the ImageNet
    weights file ``weights_path`` (Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``).
    Nothing is downloaded: a missing file is an error naming it."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG19 weights file {str(path)!r} not found; download Keras' ImageNet VGG19 "
            "weights without the top (vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5) "
            "and pass its path as vgg19_weights, or set vgg19_weights = None for the pixel "
            "MSE content loss"
        )
    vgg = keras.applications.VGG19(
        include_top=False, weights=str(path), input_shape=(None, None, 3)
    )
    names = [layer_.name for layer_ in vgg.layers]
    if layer not in names:
        raise ValueError(f"VGG19 has no layer {layer!r}; choose one of {', '.join(names[1:])}")
    if channels not in (1, 3):
        raise ValueError(f"VGG19 takes RGB (3) or grey (1) images; got {channels} channels")
    images = keras.Input((None, None, channels), name="images")
    trunk = keras.Model(vgg.inputs, vgg.get_layer(layer).output, name=f"vgg19_{layer}")
    outputs = trunk(CaffePreprocessing(name="caffe_preprocessing")(images))
    model = keras.Model(images, outputs, name=f"vgg19_{layer}_features")
    model.trainable = False
    return model
