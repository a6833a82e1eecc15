"""Task declarations: what a model can do, stated once, read by the whole pipeline.

Each trainer class names its declaration (``declaration = AutoencoderTasks``); the
exporter, the model card, the CLI (``zoo evaluate``, ``zoo sample``), the runner's image
grids and :mod:`zoo.anomaly` call :func:`declaration_of` and read it instead of testing the
model's class. A new kind of model is its trainer plus one declaration: the signatures it
serves (with their parity tolerances), example inputs for parity and warmup, its
model-card notes, what ``zoo evaluate`` and ``zoo sample`` do, and which image grids the
runner logs (docs/ARCHITECTURE.md, "How to add a model").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from zoo.tasks.examples import ExampleKind
from zoo.tasks.protocols import Generator, Reconstructor, Translator
from zoo.tasks.signatures import SignatureSet

__all__ = ["TaskDeclaration", "declaration_of"]

#: Examples per parity batch (and the first WARMUP_BATCH of them per warmup record).
PARITY_BATCH = 4


class TaskDeclaration(ABC):
    """Base declaration, bound to one model (``declaration_of(model)``).

    Class attributes a declaration sets:

    - ``family``: a label for people and metadata (``"autoencoder"``, ``"gan"``, ...);
    - ``tasks``: the protocols of :mod:`zoo.tasks.protocols` the model implements;
    - ``evaluations``: what ``zoo evaluate`` can do for it (``"anomaly"``,
      ``"likelihood"``, ``"samples"``), the default first;
    - ``latent_plots``: whether the runner logs latent interpolations and scatters.

    and overrides :meth:`signatures` (and :meth:`examples` for a model that takes
    examples). Everything else has a default built from the tasks.
    """

    family: ClassVar[str] = "model"
    tasks: ClassVar[tuple[type, ...]] = ()
    evaluations: ClassVar[tuple[str, ...]] = ()
    latent_plots: ClassVar[bool] = False

    def __init__(self, model: Any):
        self.model = model

    # -- what it is ----------------------------------------------------------------------
    def implements(self, task: type) -> bool:
        """Whether the model declares ``task`` (a protocol of :mod:`zoo.tasks.protocols`)."""
        return task in self.tasks

    @property
    def examples(self) -> ExampleKind | None:
        """The examples the model scores, reconstructs or translates (None for a model
        that only generates)."""
        return None

    @property
    def num_classes(self) -> int:
        """Classes a conditional model takes as ``labels`` (0 = unconditional)."""
        model = self.model
        return int(getattr(model, "num_classes", 0)) if getattr(model, "conditional", False) else 0

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one noise input ``z`` of ``generate`` (``(latent_dim,)``; a
        diffusion model's z is an image-shaped x_T)."""
        return (int(self.model.latent_dim),)

    @property
    def pair_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The (source, target) shapes of one training pair for a model that trains on
        image pairs (or on draws from two domains); None for a model that trains on single
        examples."""
        return None

    @property
    def input_key(self) -> str:
        """The request tensor of ``serving_default``'s main input (``images``, ``z``...)."""
        return self.examples.key if self.examples is not None else "z"

    # -- export -----------------------------------------------------------------------------
    @abstractmethod
    def signatures(
        self,
        threshold: float | None = None,
        normalization: tuple[float, float] | None = None,
    ) -> SignatureSet:
        """The serving signatures. ``threshold`` (for anomaly scorers) and
        ``normalization``'s ``(mean, std)`` are baked into ``score`` as constants."""

    def refuse_threshold(self, threshold: float | None) -> None:
        """For a declaration whose model scores nothing: a threshold is a caller's mistake."""
        if threshold is not None:
            raise ValueError(
                f"{self.model.name} is a {self.family} that scores nothing: it has no anomaly "
                "threshold"
            )

    def score_definition(self) -> str | None:
        """What the anomaly score measures, in words (metadata and model card)."""
        return None

    def use_notes(self) -> list[str]:
        """Model-card lines under "Intended use and limits" (before the generic ones about
        calibration, which the card adds for every anomaly scorer)."""
        return []

    def summary(self) -> dict[str, Any]:
        """What the export metadata records about the model beyond its config."""
        model = self.model
        out: dict[str, Any] = {}
        if self.implements(Generator) or self.implements(Reconstructor):
            out["latent_dim"] = int(model.latent_dim)
        if hasattr(model, "image_shape"):
            out["image_shape"] = [int(d) for d in model.image_shape]
        if self.examples is not None:
            shape = [None, *self.examples.shape]
        else:
            shape = [None, *self.latent_shape]
        out["input"] = {"key": self.input_key, "shape": shape, "dtype": "float32"}
        if self.num_classes:
            out["num_classes"] = self.num_classes
            out["labels"] = {"key": "labels", "shape": [None], "dtype": "int64"}
        return out

    def example_value(
        self,
        name: str,
        n: int,
        rng: np.random.Generator,
        data: np.ndarray | None,
        labels: np.ndarray | None,
        values: dict[str, np.ndarray],
    ) -> np.ndarray:
        """One parity/warmup input by tensor name. The base knows the names the shared
        signature builders use (the example key, ``z``, ``seed``, ``labels``,
        ``threshold``); a declaration with other inputs overrides this."""
        kind = self.examples
        if kind is not None and name == kind.key:
            batch = data[:n] if data is not None and len(data) >= n else kind.random(rng, n)
            return kind.for_parity(np.asarray(batch, np.float32))
        if name == "z":
            return rng.standard_normal((n, *self.latent_shape)).astype(np.float32)
        if name == "seed":
            return np.arange(n, dtype=np.int64)
        if name == "labels":
            given = labels is not None and data is not None and len(data) >= n
            return labels[:n] if given else np.arange(n, dtype=np.int64) % self.num_classes
        if name == "threshold":  # the batch's median score: both verdicts occur
            from zoo.calibration import anomaly_scores

            x = values[kind.key]
            scores = anomaly_scores(self.model, x, values.get("labels"), label="parity scores")
            return np.full([n], float(np.median(scores)), np.float32)
        raise ValueError(
            f"{type(self).__name__} has no example for the input {name!r}: a declaration "
            "whose signatures take other inputs overrides example_value"
        )

    def example_inputs(
        self,
        signature_set: SignatureSet,
        data: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        n: int = PARITY_BATCH,
    ) -> dict[str, dict[str, np.ndarray]]:
        """One fixed batch per signature and alias (parity and warmup): the first ``n``
        examples of ``data`` (or seeded stand-ins), seeded normal ``z``, seeds 0..n-1,
        labels, and a threshold at the batch's median score."""
        rng = np.random.default_rng(0)
        values: dict[str, np.ndarray] = {}
        names = [i for s in signature_set.signatures.values() for i in s.input_names]
        # the threshold last: it is the median score of the examples (and labels) before it
        ordered = sorted(dict.fromkeys(names), key=lambda k: k == "threshold")
        for name in ordered:
            values[name] = self.example_value(name, n, rng, data, labels, values)
        return {
            name: {k: values[k] for k in signature_set.resolve(name).input_names}
            for name in signature_set.endpoint_names()
        }

    # -- training and the CLI -------------------------------------------------------------------
    def sample_images(self, n: int, seed: int, labels: Any = None) -> np.ndarray:
        """``n`` images from seeded noise (``zoo sample``, the runner's sample grids)."""
        if not self.implements(Generator):
            raise TypeError(
                f"{self.model.name} ({self.family}) does not generate images; it implements "
                f"{', '.join(t.__name__ for t in self.tasks) or 'no task'}"
            )
        z = np.random.default_rng(seed).standard_normal((n, *self.latent_shape))
        return np.asarray(self.model.generate(z.astype(np.float32), labels))

    def image_grids(
        self,
        images: np.ndarray,
        num_samples: int,
        seed: int,
        targets: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The image grids the runner logs each ``sample_every_epochs``: ``samples`` from
        fixed noise for generators; ``reconstructions`` (original, reconstruction, ...) for
        reconstructors and ``translations`` (input, output, ...) for translators, on
        ``images`` (fixed held-out examples; ``targets``: their paired targets, for models
        trained on pairs). Models that do not take images log none."""
        out: dict[str, np.ndarray] = {}
        if self.implements(Generator) and num_samples:
            out["samples"] = self.sample_images(num_samples, seed)
        if self.examples is None or self.examples.key != "images" or not len(images):
            return out
        for task, kind, method in (
            (Reconstructor, "reconstructions", "reconstruct"),
            (Translator, "translations", "translate"),
        ):
            if self.implements(task):
                result = np.asarray(getattr(self.model, method)(images))
                if result.shape == images.shape:
                    pairs = np.stack([images, result], axis=1)
                    out[kind] = pairs.reshape(-1, *images.shape[1:])
                else:
                    out[kind] = result
        return out


def declaration_of(model: Any) -> TaskDeclaration:
    """The task declaration of ``model`` (its class's ``declaration``), bound to it; a
    model without one raises TypeError naming what to add."""
    declaration = getattr(type(model), "declaration", None)
    if not (isinstance(declaration, type) and issubclass(declaration, TaskDeclaration)):
        raise TypeError(
            f"{type(model).__name__} declares no tasks: give the class a `declaration = "
            "<TaskDeclaration subclass>` (see zoo.tasks and docs/ARCHITECTURE.md)"
        )
    return declaration(model)
