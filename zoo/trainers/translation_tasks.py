"""Task declaration of the image-to-image models (Pix2Pix, CycleGAN, SRResNet/SRGAN).

One declaration serves them all, read from what each trainer states about itself:

- ``TRANSLATIONS``: serving signature -> (method, output key), the first is
  ``serving_default`` (Pix2Pix ``translate``; CycleGAN ``translate_a_to_b`` and
  ``translate_b_to_a``; super-resolution ``upscale``);
- ``source_shape`` / ``target_shape``: the training shapes; ``fully_convolutional``: the
  signatures take any height and width (super-resolution);
- ``paired``: batches are (source, target) pairs, or (a, b) draws from two unpaired domains;
- ``translation_networks``: the networks the signatures run.

Image grids and ``zoo sample`` show rows of source | output | target for paired models and
a | G(a) | F(G(a)) (and b | F(b) | G(F(b))) for unpaired ones; ``zoo evaluate --task
translation`` reports L1, PSNR and SSIM against held-out targets (and the cycle L1 of
unpaired models), beside the identity (or bicubic) baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from zoo.tasks import Images, SignatureBuilder, SignatureSet, TaskDeclaration, Translator

__all__ = ["TranslatorTasks", "to_target_size"]

#: The height and width of the parity batch of a fully convolutional model: not square and
#: not the training size, so parity checks that the graphs take any size.
FREE_SIZE_EXAMPLE = (12, 20)


def to_target_size(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``images`` resized (nearest neighbour: the pixels as the model sees them) to the
    height and width of ``shape`` and given its channels, for side-by-side display."""
    images = np.asarray(images, np.float32)
    if images.shape[1:3] != tuple(shape[:2]):
        images = tf.image.resize(images, shape[:2], method="nearest").numpy()
    if images.shape[-1] != shape[-1]:
        images = np.repeat(images[..., :1], shape[-1], axis=-1)
    return images


class TranslatorTasks(TaskDeclaration):
    """An image-to-image model: each of its ``TRANSLATIONS`` is served as a signature taking
    ``images`` [N, H, W, C] in [0, 1]; it generates nothing from noise and scores nothing."""

    family = "translator"
    tasks = (Translator,)
    evaluations = ("translation",)

    @property
    def examples(self) -> Images:
        """The images the first translation takes (a free size for a fully convolutional
        model: the parity and warmup batches use :data:`FREE_SIZE_EXAMPLE`)."""
        shape = tuple(int(d) for d in self.model.source_shape)
        if self.fully_convolutional:
            shape = (*FREE_SIZE_EXAMPLE, shape[-1])
        return Images(shape)

    @property
    def fully_convolutional(self) -> bool:
        return bool(getattr(self.model, "fully_convolutional", False))

    @property
    def translations(self) -> dict[str, tuple[str, str]]:
        return dict(self.model.TRANSLATIONS)

    @property
    def pair_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The (source, target) shapes of one training pair (or of a and b)."""
        model = self.model
        return (
            tuple(int(d) for d in model.source_shape),
            tuple(int(d) for d in model.target_shape),
        )

    def serving_shape(self, shape: tuple[int, ...]) -> list[int | None]:
        """``[None, H, W, C]``, or ``[None, None, None, C]`` when fully convolutional."""
        if self.fully_convolutional:
            return [None, None, None, int(shape[-1])]
        return [None, *(int(d) for d in shape)]

    def summary(self) -> dict[str, Any]:
        source, target = self.pair_shapes
        out: dict[str, Any] = {
            "source_shape": list(source),
            "target_shape": list(target),
            "fully_convolutional": self.fully_convolutional,
            "paired": bool(self.model.paired),
        }
        out["input"] = {"key": "images", "shape": self.serving_shape(source), "dtype": "float32"}
        return out

    def signatures(
        self,
        threshold: float | None = None,
        normalization: tuple[float, float] | None = None,
    ) -> SignatureSet:
        self.refuse_threshold(threshold)
        model = self.model
        builder = SignatureBuilder()
        source, target = self.pair_shapes
        size = "any H, W" if self.fully_convolutional else f"{source[0]}x{source[1]}"
        for index, (name, (method, output)) in enumerate(self.translations.items()):
            # CycleGAN's second direction maps target-domain images back (same shape)
            shape = source if index == 0 else target
            spec = tf.TensorSpec(self.serving_shape(shape), tf.float32, name="images")
            translate = getattr(model, method)

            def body(inputs: dict[str, tf.Tensor], fn=translate, key=output) -> dict:
                return {key: tf.cast(fn(inputs["images"]), tf.float32)}

            builder.add(
                name,
                body,
                [spec],
                onnx=True,
                description=f"images [N, H, W, {shape[-1]}] in [0, 1] ({size}) -> {output} "
                f"in [0, 1] ({model.name}.{method})",
            )
        first = next(iter(self.translations))
        return builder.build(first, list(model.translation_networks))

    def use_notes(self) -> list[str]:
        model = self.model
        notes = [
            f"- Translates images: {', '.join(self.translations)} (deterministic: no dropout "
            "or noise at inference). It generates nothing from noise and scores nothing.",
        ]
        if self.fully_convolutional:
            notes.append(
                "- Fully convolutional: the signatures take images of any height and width."
            )
        else:
            source = self.pair_shapes[0]
            notes.append(
                f"- Takes {source[0]}x{source[1]}x{source[2]} images, the training size; resize "
                "other images first."
            )
        for note in getattr(model, "card_notes", lambda: [])():  # the model's own notes
            notes.append(note if note.startswith("- ") else f"- {note}")
        return notes

    # -- grids and zoo sample -----------------------------------------------------------
    def image_grids(
        self,
        images: np.ndarray,
        num_samples: int,
        seed: int,
        targets: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """``translations``: rows of (source, output, target) for paired models; for unpaired
        ones (source, translation, cycle back), in both directions when ``targets`` (images
        of the other domain) are given. Sources are shown at the target's size."""
        if not len(images):
            return {}
        return {"translations": self.triples(images, targets)}

    def triples(self, images: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
        """The grid's images, three per row, flattened: ``[3 * rows, H, W, C]``."""
        model = self.model
        methods = [getattr(model, m) for m, _ in self.translations.values()]
        images = np.asarray(images, np.float32)
        if model.paired:
            output = np.asarray(methods[0](images))
            shape = output.shape[1:]
            columns = [to_target_size(images, shape), output]
            if targets is not None:
                columns.append(to_target_size(np.asarray(targets), shape))
            return np.stack(columns, axis=1).reshape(-1, *shape)
        forward, backward = methods[0], methods[-1]
        rows = []
        for x, there, back in ((images, forward, backward), (targets, backward, forward)):
            if x is None:
                continue
            x = np.asarray(x, np.float32)
            translated = np.asarray(there(x))
            rows.append(np.stack([x, translated, np.asarray(back(translated))], axis=1))
        stacked = np.concatenate(rows)
        return stacked.reshape(-1, *stacked.shape[2:])
