"""Denoising diffusion (Ho et al. 2020, "Denoising Diffusion Probabilistic Models") with DDIM
sampling (Song et al. 2021) and classifier-free guidance (Ho & Salimans 2022).

The trainer owns one network, the denoiser ε_θ(x_t, t[, y]) (:func:`zoo.diffusion.build_unet`),
and a :class:`zoo.diffusion.NoiseSchedule`. Each training step draws t ~ U{0..T-1} and
ε ~ N(0, I) per example, forms x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (x_0 = 2·images - 1 in [-1, 1]) and
minimises Ho et al.'s simple loss ‖ε - ε_θ(x_t, t)‖² (eq. 14; ``prediction="v"`` regresses
v = √ᾱ ε - √(1-ᾱ) x_0 instead, Salimans & Ho 2022), optionally weighted by t
(``loss_weighting="min_snr"``: min(SNR_t, gamma)/SNR_t, Hang et al. 2023, in ε units).

Sampling runs as one compiled loop (:func:`zoo.diffusion.ddim_loop`, :func:`ddpm_loop`) on the
weight average of the denoiser (``ema_decay``, :mod:`zoo.ema`), which is also what is exported.
A conditional model (``num_classes > 0``) replaces each label by the "no label" token
``num_classes`` with probability ``label_dropout`` in training, and at sampling mixes
ε = ε_∅ + s (ε_y - ε_∅) with guidance scale s (s = 1: the conditional model alone; s = 0: the
unconditional one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from zoo import losses
from zoo.data.batches import unpack_batch
from zoo.diffusion import NoiseSchedule, ddim_loop, ddim_timesteps, ddpm_loop
from zoo.diffusion.anomaly import anomaly_timesteps, default_t_star, diffusion_anomaly_score
from zoo.diffusion.schedules import eps_from_v, eps_from_x0, v_from_x0_eps, x0_from_eps
from zoo.ema import WeightAverage, check_decay
from zoo.trainers.base import Trainer
from zoo.trainers.diffusion_tasks import DiffusionTasks

__all__ = ["DiffusionModel"]

PREDICTIONS = ("eps", "v")
LOSS_WEIGHTINGS = ("none", "min_snr")


def _choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is unknown; use one of {', '.join(allowed)}")
    return value


@keras.saving.register_keras_serializable(package="zoo")
class DiffusionModel(Trainer):
    """A DDPM trainer around a denoiser network (see the module docstring).

    ``schedule``: a :class:`NoiseSchedule` or its config; ``sample_steps``: DDIM steps K of
    :meth:`generate` and the exported ``generate`` (Song et al. use 10-100);
    ``guidance_scale``: the default s of conditional sampling; ``clip_denoised``: clip each
    step's x̂_0 to [-1, 1] (the usual choice for images; Ho et al.'s sampler does it too).
    ``anomaly_t_star`` (default 0.5 T), ``anomaly_steps`` (default 10, at most t* + 1),
    ``anomaly_seeds``: the AnoDDPM anomaly score of :meth:`anomaly_score`
    (:mod:`zoo.diffusion.anomaly`).
    """

    declaration = DiffusionTasks
    NETWORKS = ("denoiser",)
    OPTIMIZERS = {"optimizer": "denoiser"}
    TRACKERS = ("loss",)

    def __init__(
        self,
        denoiser: keras.Model,
        *,
        schedule: NoiseSchedule | dict[str, Any] | None = None,
        num_classes: int = 0,
        label_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        prediction: str = "eps",
        loss_weighting: str = "none",
        min_snr_gamma: float = 5.0,
        ema_decay: float | None = 0.999,
        sample_steps: int = 50,
        clip_denoised: bool = True,
        anomaly_t_star: int | None = None,
        anomaly_steps: int | None = None,
        anomaly_seeds: int = 1,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(seed=seed, **kwargs)
        self.denoiser = denoiser
        if schedule is None:
            schedule = NoiseSchedule()
        elif isinstance(schedule, dict):
            schedule = NoiseSchedule.from_config(schedule)
        self.schedule = schedule
        self.num_classes = int(num_classes)
        inputs = len(denoiser.inputs)
        if inputs != 2 + bool(self.num_classes):
            raise ValueError(
                f"num_classes={self.num_classes} needs a denoiser with "
                f"{2 + bool(self.num_classes)} inputs (x_t, t{', labels' if num_classes else ''})"
                f"; this one has {inputs} (build it with build_unet(num_classes=...))"
            )
        if not 0.0 <= float(label_dropout) < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1); got {label_dropout}")
        self.label_dropout = float(label_dropout)
        self.guidance_scale = float(guidance_scale)
        self.prediction = _choice(prediction, PREDICTIONS, "prediction")
        self.loss_weighting = _choice(loss_weighting, LOSS_WEIGHTINGS, "loss_weighting")
        self.min_snr_gamma = float(min_snr_gamma)
        if int(sample_steps) < 1 or int(sample_steps) > self.schedule.num_steps:
            raise ValueError(
                f"sample_steps must be in [1, {self.schedule.num_steps}] (the schedule's steps); "
                f"got {sample_steps}"
            )
        self.sample_steps = int(sample_steps)
        self.clip_denoised = bool(clip_denoised)
        if anomaly_t_star is None:
            anomaly_t_star = default_t_star(self.schedule.num_steps)
        if anomaly_steps is None:  # 10, or one per step when t* is smaller (short schedules)
            anomaly_steps = min(10, int(anomaly_t_star) + 1)
        anomaly_timesteps(self.schedule.num_steps, anomaly_t_star, anomaly_steps)  # checks both
        if int(anomaly_seeds) < 1:
            raise ValueError(f"anomaly_seeds must be >= 1 noise draws; got {anomaly_seeds}")
        self.anomaly_t_star, self.anomaly_steps = int(anomaly_t_star), int(anomaly_steps)
        self.anomaly_seeds = int(anomaly_seeds)
        self.ema_decay = check_decay(ema_decay)
        self.denoiser_average = (
            WeightAverage(denoiser, self.ema_decay, "ema_denoiser") if self.ema_decay else None
        )
        # the averaged denoiser lives in this attribute: checkpoints and .keras files hold it
        self.ema_denoiser = None if self.denoiser_average is None else self.denoiser_average.average
        self._compiled: dict[tuple, Callable] = {}

    # -- shapes and ranges -------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.denoiser.inputs[0].shape[1:])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one noise input z = x_T: the image shape."""
        return self.image_shape

    @property
    def latent_dim(self) -> int:
        """Values per noise input (z is an image-shaped x_T; see ``latent_shape``)."""
        return int(np.prod(self.image_shape))

    @property
    def null_label(self) -> int:
        """The "no label" token of classifier-free guidance."""
        return self.num_classes

    @staticmethod
    def to_model_range(images: Any) -> tf.Tensor:
        """Images in [0, 1] -> x_0 in [-1, 1]."""
        return 2.0 * ops.convert_to_tensor(images, "float32") - 1.0

    @staticmethod
    def to_images(x: Any) -> tf.Tensor:
        """x in [-1, 1] -> images in [0, 1] (clipped)."""
        return ops.clip((x + 1.0) / 2.0, 0.0, 1.0)

    @property
    def sampling_denoiser(self) -> keras.Model:
        """The denoiser that samples (and is exported): the weight average when
        ``ema_decay`` is set, else the trained one."""
        return self.ema_denoiser if self.ema_denoiser is not None else self.denoiser

    # -- the network -------------------------------------------------------------------------
    def _labels(self, labels: Any, n: Any) -> tf.Tensor | None:
        if not self.conditional:
            if labels is not None:
                raise ValueError(
                    f"{self.name} is unconditional: it takes no labels (build it with "
                    "num_classes=K, e.g. zoo.load('cddpm'), to condition on classes)"
                )
            return None
        if labels is None:
            return ops.mod(ops.arange(n, dtype="int32"), self.num_classes)
        return ops.reshape(ops.cast(labels, "int32"), (-1,))

    def _network_eps(
        self, network: keras.Model, x_t: Any, t: Any, y: Any, training: bool = False
    ) -> tf.Tensor:
        """ε from one evaluation of ``network`` (converting a v-prediction)."""
        t = ops.cast(t, "int32")
        inputs = [x_t, t] if y is None else [x_t, t, ops.cast(y, "int32")]
        out = ops.cast(network(inputs, training=training), x_t.dtype)
        if self.prediction == "v":
            return eps_from_v(x_t, out, self.schedule.alpha_bar_at(t, x_t))
        return out

    def eps_fn(
        self, labels: Any = None, guidance_scale: Any = None, network: keras.Model | None = None
    ) -> Callable[[Any, Any], tf.Tensor]:
        """ε_θ(x_t, t) for the samplers, on ``network`` (default: the sampling denoiser).

        Conditional: ``labels`` [N] with classifier-free guidance at ``guidance_scale``
        (default the model's), both halves in one network call; s = 1 skips the
        unconditional half. With ``clip_denoised`` the returned ε is the one whose x̂_0 is
        clipped to [-1, 1], so any DDIM/DDPM step built on it sees the clipped x̂_0."""
        network = self.sampling_denoiser if network is None else network
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        guided = self.conditional and not (isinstance(scale, (int, float)) and scale == 1.0)

        def eps(x_t: Any, t: Any) -> tf.Tensor:
            x_t = ops.convert_to_tensor(x_t, "float32")
            t = ops.cast(t, "int32")
            if not self.conditional:
                out = self._network_eps(network, x_t, t, None)
            elif not guided:
                out = self._network_eps(network, x_t, t, labels)
            else:
                n = ops.shape(x_t)[0]
                null = ops.full((n,), self.null_label, dtype="int32")
                both = self._network_eps(
                    network,
                    ops.concatenate([x_t, x_t], 0),
                    ops.concatenate([t, t], 0),
                    ops.concatenate([ops.cast(labels, "int32"), null], 0),
                )
                conditional, unconditional = both[:n], both[n:]
                s = ops.cast(scale, x_t.dtype)
                out = unconditional + s * (conditional - unconditional)
            if not self.clip_denoised:
                return out
            alpha_bar = self.schedule.alpha_bar_at(t, x_t)
            x0 = ops.clip(x0_from_eps(x_t, out, alpha_bar), -1.0, 1.0)
            return eps_from_x0(x_t, x0, alpha_bar)

        return eps

    def denoise(self, x_t: Any, t: Any, labels: Any = None) -> dict[str, tf.Tensor]:
        """One evaluation of the sampling denoiser: ``eps`` (ε_θ(x_t, t), unguided and
        unclipped) and ``denoised``, the x̂_0 it implies as images in [0, 1]. ``x_t`` in the
        model's range [-1, 1], ``t`` int [N] in [0, T)."""
        x_t = ops.convert_to_tensor(x_t, "float32")
        if not tf.is_tensor(t):
            steps = np.asarray(t)
            if steps.size and (steps.min() < 0 or steps.max() >= self.schedule.num_steps):
                raise ValueError(
                    f"t must be steps in [0, {self.schedule.num_steps}) (this model's schedule "
                    f"has {self.schedule.num_steps}); got {steps.min()}..{steps.max()}"
                )
        t = ops.cast(ops.reshape(t, (-1,)), "int32")
        y = self._labels(labels, ops.shape(x_t)[0])
        eps = self._network_eps(self.sampling_denoiser, x_t, t, y)
        x0 = x0_from_eps(x_t, eps, self.schedule.alpha_bar_at(t, x_t))
        return {"eps": eps, "denoised": self.to_images(x0)}

    def variational_bound(
        self,
        images: Any,
        labels: Any = None,
        num_timesteps: int | None = None,
        seed: int = 0,
        variance: str = "beta_tilde",
    ) -> dict[str, np.ndarray]:
        """Per-example terms of the DDPM bound on -log p(images) (Ho et al. 2020, eq. 5) in
        bits/dim, from the sampling denoiser's raw ε (no guidance, no clipping): ``prior``,
        ``diffusion``, ``decoder``, ``total`` [N] (+ ``steps`` [N, T] for the exact sum).
        ``images`` [N, H, W, C] in [0, 1] on 256 levels; ``num_timesteps=k``: stratified Monte
        Carlo over t (:func:`zoo.diffusion.likelihood.variational_bound`). A conditional model
        bounds -log p(x|y) given ``labels``, or -log p(x) through its null label without."""
        from zoo.diffusion.likelihood import in_bits_per_dim, variational_bound

        x0 = 2.0 * np.asarray(images, np.float32) - 1.0
        y = None
        if self.conditional:
            y = np.full(len(x0), self.null_label) if labels is None else np.asarray(labels)
        else:
            self._labels(labels, len(x0))  # refuses labels
        network = self.sampling_denoiser

        def eps(x_t: Any, t: Any, y: Any = None) -> tf.Tensor:
            return self._network_eps(network, x_t, t, y)

        terms = variational_bound(
            self.schedule, eps, x0, labels=y, num_timesteps=num_timesteps, seed=seed,
            variance=variance,
        )  # fmt: skip
        return in_bits_per_dim(terms, int(np.prod(self.image_shape)))

    def anomaly_score(self, images: Any, labels: Any = None) -> tf.Tensor:
        """AnoDDPM's score (Wyatt et al. 2022; :mod:`zoo.diffusion.anomaly`), float32 [N],
        higher = more anomalous: ``images`` [N, H, W, C] in [0, 1] noised to ``anomaly_t_star``
        with fixed noise (seeds 0 .. ``anomaly_seeds`` - 1, so the score is a deterministic
        function of each image), DDIM (η = 0) back in ``anomaly_steps`` steps on the sampling
        denoiser, mean squared error per value in [0, 1] units. Compiled once per setting.
        A conditional model scores under each example's ``labels`` (guidance scale 1: the
        conditional model alone), or under the null label (p(x)) without."""
        images = ops.convert_to_tensor(images, "float32")
        if self.conditional and labels is None:
            y = ops.full((ops.shape(images)[0],), self.null_label, dtype="int32")
        else:
            y = self._labels(labels, ops.shape(images)[0])  # refuses labels if unconditional
        t_star, steps, seeds = self.anomaly_t_star, self.anomaly_steps, self.anomaly_seeds
        key = ("anomaly", t_star, steps, seeds, y is None)
        if key not in self._compiled:

            def eps(x_t: Any, t: Any, labels: Any = None) -> tf.Tensor:
                return self.eps_fn(labels, 1.0)(x_t, t)

            def run(images, y):
                return diffusion_anomaly_score(
                    self.schedule, eps, images, t_star, steps, tuple(range(seeds)), labels=y
                )

            self._compiled[key] = tf.function(run, reduce_retracing=True)
        return self._compiled[key](images, y)

    # -- sampling ----------------------------------------------------------------------------
    def ddim_sample(
        self, z: Any, labels: Any, guidance_scale: Any, seed: Any, steps: int, eta: float
    ) -> tf.Tensor:
        """The DDIM loop from x_T = ``z`` (graph-safe: what ``generate`` compiles and the
        export traces); images in [0, 1]."""
        z = ops.convert_to_tensor(z, "float32")
        timesteps, targets = ddim_timesteps(self.schedule.num_steps, int(steps))
        eps = self.eps_fn(labels, guidance_scale)
        x = ddim_loop(self.schedule, eps, z, timesteps, targets, eta=eta, seed=seed)
        return self.to_images(x)

    def _compiled_sampler(self, kind: str, steps: int, eta: float) -> Callable:
        key = (kind, steps, eta)
        if key not in self._compiled:
            if kind == "ddim":

                def run(z, labels, scale, seed):
                    return self.ddim_sample(z, labels, scale, seed, steps, eta)
            else:

                def run(z, labels, scale, seed):
                    eps = self.eps_fn(labels, scale)
                    clip = 1.0 if self.clip_denoised else None
                    return self.to_images(ddpm_loop(self.schedule, eps, z, seed, clip_x0=clip))

            self._compiled[key] = tf.function(run, reduce_retracing=True)
        return self._compiled[key]

    def _sampler_arguments(self, z: Any, labels: Any, guidance_scale: Any, seed: Any) -> tuple:
        z = ops.convert_to_tensor(z, "float32")
        y = self._labels(labels, ops.shape(z)[0])
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        seed = ops.convert_to_tensor([0, 0] if seed is None else seed, "int32")
        if len(ops.shape(seed)) == 0:
            seed = ops.stack([ops.convert_to_tensor(0, "int32"), seed])
        return z, y, ops.convert_to_tensor(scale, "float32"), seed

    def generate(
        self,
        z: Any,
        labels: Any = None,
        steps: int | None = None,
        eta: float = 0.0,
        seed: Any = None,
        guidance_scale: Any = None,
    ) -> tf.Tensor:
        """Images in [0, 1] by DDIM (Song et al. 2021) from x_T = ``z`` [N, H, W, C] in
        ``steps`` steps (default ``sample_steps``), compiled as one loop. η = 0 is
        deterministic; η > 0 draws noise from ``seed`` (int or int [2]). A conditional model
        takes ``labels`` [N] (default: i mod K)."""
        steps = self.sample_steps if steps is None else int(steps)
        if not 1 <= steps <= self.schedule.num_steps:
            raise ValueError(f"steps must be in [1, {self.schedule.num_steps}]; got {steps}")
        if eta > 0 and seed is None:
            seed = 0
        run = self._compiled_sampler("ddim", steps, float(eta))
        return run(*self._sampler_arguments(z, labels, guidance_scale, seed))

    def ddpm_generate(
        self, z: Any, labels: Any = None, seed: Any = 0, guidance_scale: Any = None
    ) -> tf.Tensor:
        """Images in [0, 1] by ancestral sampling over all T steps (Ho et al. 2020,
        Algorithm 2, σ² = β), noise from ``seed``."""
        run = self._compiled_sampler("ddpm", self.schedule.num_steps, 1.0)
        return run(*self._sampler_arguments(z, labels, guidance_scale, seed))

    def trajectory(
        self, z: Any, labels: Any = None, steps: int | None = None, frames: int = 8
    ) -> np.ndarray:
        """The x̂_0 a DDIM run (η = 0, from x_T = ``z``) predicts along the way: images in
        [0, 1] of shape [frames, N, H, W, C] at evenly spaced steps, the last frame being the
        sample ``generate`` returns (for grids of the denoising process)."""
        steps = self.sample_steps if steps is None else int(steps)
        timesteps, targets = ddim_timesteps(self.schedule.num_steps, steps)
        x, y, scale, _ = self._sampler_arguments(z, labels, None, None)
        if ("step",) not in self._compiled:

            def one_step(x_t, t, t_prev, y, scale):
                eps = self.eps_fn(y, scale)(x_t, t)
                x0 = x0_from_eps(x_t, eps, self.schedule.alpha_bar_at(t, x_t))
                return self.schedule.ddim_step(x_t, eps, t, t_prev), self.to_images(x0)

            self._compiled[("step",)] = tf.function(one_step, reduce_retracing=True)
        step = self._compiled[("step",)]
        keep = set(np.unique(np.linspace(0, steps - 1, max(int(frames), 1)).round().astype(int)))
        n, shown = ops.shape(x)[0], []
        for i, (t, t_prev) in enumerate(zip(timesteps, targets, strict=True)):
            x, x0 = step(x, tf.fill([n], int(t)), tf.fill([n], int(t_prev)), y, scale)
            if i in keep:
                shown.append(np.asarray(x0))
        return np.stack(shown)

    def sample(self, n: int, labels: Any = None) -> tf.Tensor:
        """``n`` images from noise drawn by the model's seed generator (DDIM, η = 0)."""
        z = keras.random.normal((int(n), *self.image_shape), seed=self.seed_generator)
        return self.generate(z, labels)

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        """``generate`` for ``z`` (or ``(z, labels)``)."""
        z, labels = inputs if isinstance(inputs, (tuple, list)) else (inputs, None)
        return self.generate(z, labels)

    # -- training ----------------------------------------------------------------------------
    def loss_weights(self, t: Any) -> tf.Tensor:
        """Per-example weights of the ε-MSE at steps ``t`` [N] (all 1 for ``"none"``),
        gathered from a float64 table (SNR_t = ᾱ_t / (1 - ᾱ_t) is exact near t = 0)."""
        if self.loss_weighting == "none":
            return ops.ones(ops.shape(t), "float32")
        snr = self.schedule.alpha_bars / (1.0 - self.schedule.alpha_bars)
        weight = np.minimum(snr, self.min_snr_gamma) / snr
        if self.prediction == "v":  # the v-MSE is (1 + SNR) times the ε-MSE
            weight = weight / (1.0 + snr)
        return self.schedule.coefficient(weight, t, ops.zeros((1,)))

    def noise_prediction_loss(
        self, images: Any, labels: Any, t: Any, noise: Any, training: bool = False
    ) -> tf.Tensor:
        """The (weighted) simple loss of the live denoiser for given steps ``t`` [N] and noise
        ε: mean over the batch of w(t) ‖target - network(x_t, t[, y])‖² / D (Ho et al. 2020,
        eq. 14; target ε, or v for ``prediction="v"``). Deterministic given its inputs;
        training draws t, ε and the dropped labels (:meth:`step_losses`)."""
        x0 = self.to_model_range(images)
        t = ops.cast(t, "int32")
        x_t = self.schedule.add_noise(x0, noise, t)
        inputs = [x_t, t] if labels is None else [x_t, t, ops.cast(labels, "int32")]
        prediction = ops.cast(self.denoiser(inputs, training=training), "float32")
        if self.prediction == "v":
            target = v_from_x0_eps(x0, noise, self.schedule.alpha_bar_at(t, x0))
        else:
            target = noise
        axes = tuple(range(1, len(x0.shape)))
        per_example = ops.mean(ops.square(prediction - target), axis=axes)
        return losses.average(per_example * self.loss_weights(t))

    def step_losses(self, images: Any, labels: Any, training: bool) -> dict[str, tf.Tensor]:
        """One batch of Ho et al. 2020, Algorithm 1: t ~ U{0..T-1}, ε ~ N(0, I) per example
        (and, conditional, labels dropped to the null token with p = ``label_dropout``)."""
        images = ops.convert_to_tensor(images, "float32")
        n = ops.shape(images)[0]
        t = self.draw(
            keras.random.randint, (n,), minval=0, maxval=self.schedule.num_steps, dtype="int32"
        )
        noise = self.normal(ops.shape(images))
        y = None
        if self.conditional:
            y = self._labels(labels, n)
            if training and self.label_dropout > 0:
                drop = self.uniform((n,)) < self.label_dropout
                y = ops.where(drop, self.null_label, y)
        return {"loss": self.noise_prediction_loss(images, y, t, noise, training)}

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        images, labels = unpack_batch(data)
        if self.conditional and labels is None:
            raise ValueError(
                f"{self.name} is conditional: it trains on (images, labels) batches "
                "(in a recipe: data.with_labels = true)"
            )
        values = self.minimize(
            lambda: self.step_losses(images, labels, training=True),
            self.optimizer,
            self.denoiser.trainable_variables,
        )
        if self.denoiser_average is not None:
            # Warm-up of the average (as tf.train.ExponentialMovingAverage's num_updates):
            # decay min(d, (1 + k) / (10 + k)) at step k, so short runs are not dominated
            # by the initial weights.
            k = ops.cast(self.optimizer.iterations, "float32")
            self.denoiser_average.update(ops.minimum(self.ema_decay, (1.0 + k) / (10.0 + k)))
        return self.record(values, ops.shape(images)[0])

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        images, labels = unpack_batch(data)
        values = self.step_losses(images, labels, training=False)
        return self.record(values, ops.shape(images)[0])

    def default_optimizer(self, role: str) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(2e-4)  # Ho et al. 2020 (CIFAR-10)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "schedule": self.schedule.get_config(),
            "num_classes": self.num_classes,
            "label_dropout": self.label_dropout,
            "guidance_scale": self.guidance_scale,
            "prediction": self.prediction,
            "loss_weighting": self.loss_weighting,
            "min_snr_gamma": self.min_snr_gamma,
            "ema_decay": self.ema_decay,
            "sample_steps": self.sample_steps,
            "clip_denoised": self.clip_denoised,
            "anomaly_t_star": self.anomaly_t_star,
            "anomaly_steps": self.anomaly_steps,
            "anomaly_seeds": self.anomaly_seeds,
        }
