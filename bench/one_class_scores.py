"""Scores for the one-class benchmark (``bench.one_class_mnist``).

A zoo model's figures come from the zoo's own scoring: ``anomaly_scores`` (the model's
``anomaly_score``, batched as ``zoo evaluate`` and ``AnomalyDetector.score`` batch it).
A residual score such as ``blur:<s>`` or ``top<f>:<s>`` is the autoencoder's own
``score_blur`` / ``score_top_fraction`` option (``with_residual_score``), so what is
measured is what the exported ``score`` signature computes. The PCA baseline's scores
and the validation-only candidates (``pixvar``, SSIM, RAPP, latent Mahalanobis, sums;
see bench/reports/one_class_mnist_notes.md) are numpy formulas here: no zoo model
computes them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bench.common import pca_components

#: PCA baseline: k = the fewest components explaining this share of the normal training
#: images' variance (fixed before any test score was seen).
PCA = {"variance": 0.90}
PCA_SWEEP = (0.80, 0.90, 0.95, 10, 30)  # reported beside, never used to pick k

PIXVAR_EPS = (0.01, 0.1, 1.0)  # validation: pixvar:<eps> for every autoencoder
BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.0)  # validation: blur:<sigma> for every autoencoder
#: validation: top<f>:<sigma> for every autoencoder, as (top fraction, blur sigma)
TOP_SCORES = tuple((top, sigma) for sigma in (1.0, 1.5) for top in (0.02, 0.05, 0.1, 0.2))
SSIM_WINDOWS = (7, 11)  # --extra-scores: ssim:<window>
SUMS = (("blur:1", "latent"), ("blur:1", "sap"), ("blur:1", "ssim:7"))  # --extra-scores
#: validation: t:<t*> for a diffusion model, t* = round(f T) - 1 for these shares f of its T
#: (a subset of zoo.diffusion.anomaly.T_STAR_FRACTIONS: each costs a scoring pass)
DIFFUSION_T_FRACTIONS = (0.15, 0.35, 0.5, 0.65, 0.8)

Residual = tuple[float | None, float]  # (blur sigma or None, top fraction)
Pair = tuple[np.ndarray, np.ndarray]  # (normal training scores, evaluation scores)


# --------------------------------------------------------------------------- names


def residual_option(name: str) -> Residual | None:
    """(blur sigma, top fraction) named by ``blur:<s>`` or ``top<f>:<s>``; None otherwise
    (also for a sum such as ``blur:1+latent``)."""
    if "+" in name:
        return None
    kind, _, value = name.partition(":")
    if kind == "blur":
        return float(value), 1.0
    if kind.startswith("top") and value:
        return float(value), float(kind[3:])
    return None


def score_of(config: dict[str, object]) -> Residual | None:
    """(blur sigma, top fraction) of a config's residual score: the zoo's ``score_blur`` and
    ``score_top_fraction``, or a bench-side ``scoring`` (``blur:<s>``, ``top<f>:<s>``);
    None for a plain mean squared error."""
    sigma = float(config.get("score_blur") or 0.0) or None
    top = float(config.get("score_top_fraction", 1.0))
    sigma, top = residual_option(str(config.get("scoring", "model"))) or (sigma, top)
    return None if sigma is None and top >= 1.0 else (sigma, top)


def score_label(score: Residual) -> str:
    """``blur:<s>`` or ``top<f>:<s>``, the names ``residual_option`` reads."""
    sigma, top = score
    return f"blur:{sigma or 0:g}" if top >= 1.0 else f"top{top:g}:{sigma or 0:g}"


def candidate_names(model: Any, extra: bool = False) -> list[str]:
    """Every score ``member_scores`` computes on validation: ``model``, and for a model with
    a residual score (the autoencoders; the VAE keeps its ELBO) ``pixvar:<eps>``,
    ``blur:<s>``, ``top<f>:<s>``; with ``extra``, the round-4 candidates too. A diffusion
    model's candidates are its AnoDDPM score at each t* of ``t_star_candidates`` (``t:<t*>``)."""
    if hasattr(model, "anomaly_t_star"):
        from zoo.diffusion.anomaly import t_star_candidates

        steps = t_star_candidates(model.schedule.num_steps, DIFFUSION_T_FRACTIONS)
        return ["model", *(f"t:{t}" for t in steps)]
    if not hasattr(model, "score_blur"):
        return ["model"]
    names = ["model", *(f"pixvar:{eps:g}" for eps in PIXVAR_EPS)]
    names += [f"blur:{sigma:g}" for sigma in BLUR_SIGMAS]
    names += [f"top{top:g}:{sigma:g}" for top, sigma in TOP_SCORES]
    if extra:
        names += [f"ssim:{w}" for w in SSIM_WINDOWS] + ["sap", "nap", "latent"]
        names += [f"{a}+{b}" for a, b in SUMS]
    return names


# --------------------------------------------------------------------------- zoo models


def zoo_scores(model: Any, images: np.ndarray) -> np.ndarray:
    """The zoo's scores of ``images``: ``anomaly_scores(model, images)`` exactly (float64),
    without its progress bar (the benchmark logs per digit)."""
    from zoo.calibration import anomaly_scores

    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        return anomaly_scores(model, images)


@contextlib.contextmanager
def with_residual_score(model: Any, score: Residual) -> Iterator[Any]:
    """``model`` scoring as if built with ``score_blur`` = sigma and ``score_top_fraction``
    = top (its own ``anomaly_score`` code reads both on every call); restored after."""
    saved = model.score_blur, model.score_top_fraction
    model.score_blur, model.score_top_fraction = float(score[0] or 0.0), float(score[1])
    try:
        yield model
    finally:
        model.score_blur, model.score_top_fraction = saved


@contextlib.contextmanager
def with_t_star(model: Any, t_star: int) -> Iterator[Any]:
    """A diffusion ``model`` scoring as if built with ``anomaly_t_star`` = t_star (its own
    ``anomaly_score`` reads it on every call); restored after."""
    saved = model.anomaly_t_star
    model.anomaly_t_star = int(t_star)
    try:
        yield model
    finally:
        model.anomaly_t_star = saved


def member_scores(model: Any, x_fit: np.ndarray, x_eval: np.ndarray, names: list[str]) -> dict:
    """The named scores of one trained model as (normal training, evaluation) pairs:
    ``model`` (its ``anomaly_score`` as configured), residual scores (``residual_option``:
    the zoo's code with that option), a diffusion model's ``t:<t*>`` (the zoo's code at that
    t*), and the numpy candidates (``candidate_scores``)."""
    pair = (x_fit, x_eval)
    out: dict[str, Pair] = {}
    for name in names:
        option = residual_option(name)
        if name == "model":
            out[name] = (zoo_scores(model, x_fit), zoo_scores(model, x_eval))
        elif name.startswith("t:"):
            with with_t_star(model, int(name[2:])) as scorer:
                out[name] = (zoo_scores(scorer, x_fit), zoo_scores(scorer, x_eval))
        elif option is not None:
            with with_residual_score(model, option) as scorer:
                out[name] = (zoo_scores(scorer, x_fit), zoo_scores(scorer, x_eval))
    rest = [name for name in names if name not in out]
    if rest:
        out.update(candidate_scores(model, pair, {**out}, rest))
    return {name: out[name] for name in names}


# --------------------------------------------------------------------------- PCA baseline


def pca_reconstruction(fit: tuple[np.ndarray, ...], images: np.ndarray, k: int) -> np.ndarray:
    """Projection of ``images`` onto the top-k principal subspace, as images."""
    mean, directions, _ = fit
    centered = images.reshape(len(images), -1).astype(np.float64) - mean
    basis = directions[:k]
    return ((centered @ basis.T) @ basis + mean).reshape(images.shape).astype(np.float32)


def residual_scores(residual: np.ndarray, score: Residual) -> np.ndarray:
    """An autoencoder's residual score (``Autoencoder.anomaly_score``'s definition) for a
    reconstruction no zoo model made (PCA's): the mean of the largest ``top`` share of the
    squared values after the zoo's Gaussian blur (``zoo.losses.gaussian_blur``)."""
    from zoo.losses import gaussian_blur

    sigma, top = score
    if sigma:
        residual = np.asarray(gaussian_blur(residual.astype(np.float32), sigma))
    squared = (residual.astype(np.float64) ** 2).reshape(len(residual), -1)
    if top < 1.0:
        count = max(1, round(top * squared.shape[1]))
        squared = np.partition(squared, squared.shape[1] - count, axis=1)[:, -count:]
    return squared.mean(axis=1)


def pca_scores(
    fit: tuple[np.ndarray, ...], images: np.ndarray, k: int, score: Residual | None = None
) -> np.ndarray:
    """Squared reconstruction error from the top-k principal subspace; with ``score``, the
    autoencoders' residual score of the PCA residual (``residual_scores``)."""
    residual = images.astype(np.float64) - pca_reconstruction(fit, images, k)
    if score is None:
        return np.sum(residual.reshape(len(images), -1) ** 2, axis=1)
    return residual_scores(residual, score)


def pca_rows(configs: dict[str, dict[str, object]]) -> dict[str, tuple[float, Residual | None]]:
    """The PCA sensitivity rows: label -> (k rule, residual score or None). Every rule of
    ``PCA_SWEEP`` with the plain score, and the baseline's rule with each residual score
    that an autoencoder config uses (so a score change is not mistaken for a model gain)."""
    rows: dict[str, tuple[float, Residual | None]] = {
        (f"{rule:.0%} variance" if rule < 1 else f"k = {rule}"): (rule, None) for rule in PCA_SWEEP
    }
    for config in configs.values():
        score = score_of(config)
        if score is not None:
            rows[f"{PCA['variance']:.0%} variance, {score_label(score)} score"] = (
                PCA["variance"], score
            )  # fmt: skip
    return rows


def pca_candidate_rows(fit: tuple[np.ndarray, ...], x_eval: np.ndarray) -> dict[str, np.ndarray]:
    """``--extra-scores``: PCA (90% variance) with the round-4 candidate scores."""
    k = pca_components(fit[2], PCA["variance"])
    rebuilt = pca_reconstruction(fit, x_eval, k)
    rows = {f"90% variance, ssim:{w}": ssim_scores(x_eval, rebuilt, w) for w in SSIM_WINDOWS}
    for top, sigma in TOP_SCORES:
        rows[f"90% variance, top{top:g}:{sigma:g}"] = residual_scores(
            x_eval - rebuilt, (sigma, top)
        )
    return rows


# --------------------------------------------------------------------------- candidates


def pixel_variance_scores(fit_sq: np.ndarray, eval_sq: np.ndarray, eps: float) -> Pair:
    """Residual scores weighted per pixel (a diagonal-Gaussian, Mahalanobis-style score):
    sum_i r_i^2 / (s_i^2 + eps * mean(s^2)), with s_i^2 the mean squared residual of
    pixel i over the normal training images. Returns (training, evaluation) scores."""
    variance = fit_sq.mean(axis=0)
    weights = 1.0 / (variance + eps * variance.mean())
    return fit_sq @ weights, eval_sq @ weights


def ssim_scores(images: np.ndarray, rebuilt: np.ndarray, window: int) -> np.ndarray:
    """1 - SSIM(x, x_hat) (Wang et al., 2004; as an autoencoder anomaly score: Bergmann
    et al., 2019), Gaussian window ``window`` px, sigma 1.5, ``tf.image.ssim``."""
    import tensorflow as tf

    x, x_hat = tf.constant(images, tf.float32), tf.constant(rebuilt, tf.float32)
    return 1.0 - tf.image.ssim(x, x_hat, 1.0, filter_size=window).numpy()


def batched(fn: Callable[[np.ndarray], Any], images: np.ndarray, size: int = 500) -> np.ndarray:
    """``fn`` over ``images`` in batches of ``size``, concatenated as numpy."""
    return np.concatenate(
        [np.asarray(fn(images[i : i + size])) for i in range(0, len(images), size)]
    )


def rapp_scores(model: Any, pair: tuple[np.ndarray, ...], rebuilt: list[np.ndarray]) -> dict:
    """RAPP (Kim et al., 2020): squared differences between the encoder's hidden activations
    of x and of x_hat, summed over layers, raw (``sap``) or whitened by the SVD of the
    normal training differences (``nap``)."""
    import keras

    encoder = model.encoder
    hidden = [layer.output for layer in encoder.layers if isinstance(layer, keras.layers.LeakyReLU)]
    taps = keras.Model(encoder.input, [*hidden, encoder.output])

    def activations(images: np.ndarray) -> list[np.ndarray]:
        outputs = taps.predict(images, batch_size=500, verbose=0)
        return [np.reshape(o, (len(images), -1)) for o in outputs]

    diffs = [
        [a - b for a, b in zip(activations(x), activations(r), strict=True)]
        for x, r in zip(pair, rebuilt, strict=True)
    ]
    nap = [0.0, 0.0]
    for fit_d, eval_d in zip(*diffs, strict=True):
        mean = fit_d.mean(axis=0)
        _, singular, directions = np.linalg.svd(fit_d - mean, full_matrices=False)
        keep = singular > 1e-3 * singular[0]
        for i, d in enumerate((fit_d, eval_d)):
            nap[i] = nap[i] + ((((d - mean) @ directions[keep].T) / singular[keep]) ** 2).sum(1)
    sap = tuple(sum((d**2).sum(axis=1) for d in layers) for layers in diffs)
    return {"sap": sap, "nap": tuple(nap)}


def candidate_scores(
    model: Any, pair: tuple[np.ndarray, ...], base: dict, names: list[str]
) -> dict:
    """The validation-only candidates of ``names`` from the trained network's
    reconstructions: ``pixvar:<eps>`` (``pixel_variance_scores``), ``ssim:<w>``
    (``ssim_scores``), ``sap`` / ``nap`` (``rapp_scores``), ``latent`` (Mahalanobis distance
    of the code to the normal training codes) and ``a+b`` (the sum of two scores, each
    divided by its median normal-training score)."""
    rebuilt = [batched(model.reconstruct, images) for images in pair]
    squared = [((x - r) ** 2).reshape(len(x), -1) for x, r in zip(pair, rebuilt, strict=True)]
    out: dict[str, Pair] = {}
    for name in names:
        kind, _, value = name.partition(":")
        if kind == "pixvar":
            out[name] = pixel_variance_scores(*squared, float(value))
        elif kind == "ssim":
            out[name] = tuple(
                ssim_scores(x, r, int(value)) for x, r in zip(pair, rebuilt, strict=True)
            )
    if {"sap", "nap"} & set(names):
        out.update(rapp_scores(model, pair, rebuilt))
    if "latent" in names:
        codes = [batched(model.encode, x) for x in pair]
        center = codes[0].mean(axis=0)
        precision = np.linalg.inv(np.cov(codes[0].T) + 1e-3 * np.eye(codes[0].shape[1]))
        out["latent"] = tuple(
            np.einsum("ij,jk,ik->i", c - center, precision, c - center) for c in codes
        )
    every = {**base, **out}
    for name in names:
        if "+" in name:
            (fit_a, eval_a), (fit_b, eval_b) = (every[part] for part in name.split("+"))
            norm_a, norm_b = np.median(fit_a), np.median(fit_b)
            out[name] = (fit_a / norm_a + fit_b / norm_b, eval_a / norm_a + eval_b / norm_b)
    unknown = sorted(set(names) - set(out))
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; choose from {candidate_names(model, True)}")
    return {name: out[name] for name in names}
