"""Task declaration of the GANs: ``generate`` (z) and ``sample`` (seeds, SavedModel only);
``serving_default`` = ``generate``. Conditional GANs take ``labels``; the exported
generator is the one the GAN samples with (the weight average when ``ema_decay`` is set).
"""

from __future__ import annotations

from zoo.tasks import Generator, Sampler, SignatureBuilder, SignatureSet, TaskDeclaration

__all__ = ["GANTasks"]


class GANTasks(TaskDeclaration):
    """A GAN (Goodfellow et al., 2014): generates images from latent noise; scores nothing."""

    family = "gan"
    tasks = (Sampler, Generator)
    evaluations = ("samples",)

    def signatures(
        self,
        threshold: float | None = None,
        normalization: tuple[float, float] | None = None,
    ) -> SignatureSet:
        self.refuse_threshold(threshold)
        builder = SignatureBuilder(self.num_classes)
        builder.add_generator(self.model.generate, self.model.latent_dim)
        return builder.build("generate", [self.model.sampling_generator])

    def use_notes(self) -> list[str]:
        return [
            "- Generates images like the training data from latent vectors z ~ N(0, I). "
            "It scores nothing and has no threshold.",
            "- `sample` (SavedModel only) draws z from a seed; ONNX users feed z to `generate`.",
        ]
