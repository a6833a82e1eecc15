"""The tasks a zoo model can do, written down as typing Protocols.

A trainer states which of them it implements in its task declaration
(:class:`zoo.tasks.TaskDeclaration`); the exporter, the model card, the CLI, the runner and
:mod:`zoo.anomaly` read that declaration instead of testing the model's class. The
protocols are the contract each method keeps; ``isinstance(model, Generator)`` checks only
that the methods exist (``runtime_checkable``), the declaration is what the pipeline trusts.

Shapes: ``N`` examples; images are float32 ``[N, H, W, C]`` in [0, 1]; sequences float32
``[N, T, F]``; ``labels`` are int class ids ``[N]`` for conditional models (None otherwise).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AnomalyScorer",
    "BoundModel",
    "Generator",
    "LikelihoodModel",
    "Reconstructor",
    "Sampler",
    "Translator",
]


@runtime_checkable
class Sampler(Protocol):
    """Draws new examples from the model's distribution.

    ``sample(n, labels)`` returns ``n`` images ``[n, *image_shape]`` in [0, 1]; the draw
    uses the model's seed generator, so a seeded model draws the same images again;
    ``labels`` (ids ``[n]``) picks the class of each image for conditional models."""

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    def sample(self, n: int, labels: Any = None) -> Any: ...


@runtime_checkable
class Generator(Protocol):
    """Maps explicit noise to examples, deterministically.

    ``generate(z, labels)``: ``z`` float32 ``[N, latent_dim]`` (standard normal for every
    zoo generator) -> images ``[N, *image_shape]`` in [0, 1]. The same ``z`` gives the same
    images, so serving can take ``z`` as an input (and ONNX graphs, which cannot hold
    random ops, always do)."""

    @property
    def latent_dim(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    def generate(self, z: Any, labels: Any = None) -> Any: ...


@runtime_checkable
class Reconstructor(Protocol):
    """Encodes examples to codes and reconstructs them.

    ``encode(x)`` -> codes (a tensor ``[N, latent_dim]``, or a VAE's ``(mean,
    log_variance)``); ``reconstruct(x)`` -> examples of ``x``'s shape, for images in
    [0, 1]."""

    def encode(self, x: Any) -> Any: ...

    def reconstruct(self, x: Any) -> Any: ...


@runtime_checkable
class AnomalyScorer(Protocol):
    """Scores how unlike the training data each example is.

    ``anomaly_score(x)`` -> float ``[N]``, higher = more anomalous; conditional models take
    ``labels=`` and score each example under its label. A threshold ``t`` applies as
    ``is_anomaly = score > t`` (strictly greater) or the score is not finite (a NaN or
    infinite input is never normal), with ``t`` calibrated on held-out normal data
    (:mod:`zoo.calibration`)."""

    def anomaly_score(self, x: Any) -> Any: ...


@runtime_checkable
class LikelihoodModel(Protocol):
    """A latent-variable model whose marginal likelihood can be estimated.

    - ``encode(x)`` -> (mean, log-variance) of a diagonal Gaussian q(z|x), each [N, d];
    - ``log_likelihood(x, z)`` -> log p(x|z) per example [N] (nats, summed over the
      example's values); a model whose ``log_likelihood_broadcasts`` is True also takes
      z [k, N, d] -> [k, N] (the estimator then does not copy the examples k times);
    - ``prior`` -> an object with ``log_prob(z)`` [..., d] -> [...] (e.g. a
      ``tfp.distributions`` distribution), log p(z).

    Conditional models take ``labels=`` in ``encode`` and ``log_likelihood``.
    :mod:`zoo.likelihood` estimates log p(x) from these by importance sampling (Burda et
    al., 2016)."""

    def encode(self, x: Any) -> Any: ...

    def log_likelihood(self, x: Any, z: Any) -> Any: ...

    @property
    def prior(self) -> Any: ...


@runtime_checkable
class BoundModel(Protocol):
    """A model with a variational upper bound on -log P(x) of 8-bit images (e.g. the DDPM bound,
    Ho et al. 2020, eq. 5).

    ``variational_bound(images, labels=None, num_timesteps=None, seed=0)``: images
    ``[N, *image_shape]`` in [0, 1] on 256 levels -> a dict of per-example float arrays in
    bits/dim: ``"total"`` [N], the bound, and its terms (other [N] arrays, e.g. ``prior``,
    ``diffusion``, ``decoder``) that add up to it; 2-D entries (e.g. ``steps`` [N, T]) are
    detail. ``num_timesteps`` asks for a Monte Carlo estimate over the bound's terms (None: the
    exact sum); ``seed`` fixes its noise. A bound on a discrete probability, in the units of a
    discrete likelihood's bits/dim. Conditional models bound -log P(x|y) given ``labels``.
    :mod:`zoo.likelihood` reports it for ``zoo evaluate --task likelihood``."""

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    def variational_bound(
        self, images: Any, labels: Any = None, num_timesteps: int | None = None, seed: int = 0
    ) -> Any: ...


@runtime_checkable
class Translator(Protocol):
    """Maps an image to an image (image-to-image translation, super-resolution).

    ``translate(images)``: float32 ``[N, *source_shape]`` in [0, 1] -> ``[N, *target_shape]``
    in [0, 1], deterministic at inference (Pix2Pix drops its dropout noise, Isola et al.,
    2017)."""

    @property
    def source_shape(self) -> tuple[int, ...]: ...

    @property
    def target_shape(self) -> tuple[int, ...]: ...

    def translate(self, images: Any) -> Any: ...
