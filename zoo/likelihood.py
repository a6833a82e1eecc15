"""Marginal likelihood of latent-variable models by importance sampling, and the
evaluation report behind ``zoo evaluate --task likelihood``.

The estimator (Burda et al., 2015, section 5; Rezende et al., 2014) uses the model's own
approximate posterior as the proposal::

    log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x)

an unbiased estimate of p(x) inside the log, so by Jensen's inequality it is a
stochastic *lower* bound of log p(x) in expectation that tightens as k grows (it is the
IWAE bound L_k). Samples are drawn in chunks of ``batch_k`` so memory stays bounded for
k = 5000, and the chunks are combined with a numerically stable log-sum-exp.

It works on anything that follows :class:`zoo.tasks.LikelihoodModel`: every zoo VAE, or a small
hand-built model (the tests use a linear-Gaussian model whose p(x) is known in closed
form). A model with its own variational bound (:class:`zoo.tasks.BoundModel`, e.g. a diffusion
model's DDPM bound) is reported by :func:`evaluate_bound` instead, in the same files.

Units: nats per example; bits/dim = -log p(x) / (D ln 2) with D the number of pixel
values. For a Bernoulli likelihood the data must be binary: the standard benchmark is
binarised MNIST, and :func:`evaluate_likelihood` binarises [0, 1] images once
(stochastically, x ~ Bernoulli(pixel), fixed seed) and says so in its report. For
continuous likelihoods the numbers are densities on [0, 1]^D (not comparable to
discrete-data likelihoods).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.fileio import atomic_write_text
from zoo.progress import Progress
from zoo.tasks.protocols import BoundModel, LikelihoodModel

#: Burda et al. (2015): a latent unit is active if Cov_x(E_q[z_j]) > 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01
#: The zoo's image likelihoods (zoo.trainers.vae_distributions.LIKELIHOODS).
LIKELIHOOD_NAMES = ("bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned")
#: Chunk of posterior samples evaluated at once (times the example batch).
DEFAULT_BATCH_K = 500


def _check_model(model: Any) -> None:
    if not isinstance(model, LikelihoodModel):
        missing = [n for n in ("encode", "log_likelihood", "prior") if not hasattr(model, n)]
        raise TypeError(
            f"{type(model).__name__} cannot be evaluated by importance sampling: it lacks "
            f"{', '.join(missing)} (see zoo.tasks.LikelihoodModel; zoo VAEs have them), and "
            "has no variational_bound (zoo.tasks.BoundModel; zoo diffusion models have it)"
        )


def _chunk_function(model: Any, conditional: bool):
    """A compiled function: one chunk of kc samples for a batch of examples ->
    (logsumexp_i log w_i [B], sum_i log p(x|z_i) [B])."""
    import tensorflow as tf

    log_2pi = math.log(2.0 * math.pi)
    broadcasts = bool(getattr(model, "log_likelihood_broadcasts", False))

    def log_likelihood(x, z, y):
        if conditional:
            return model.log_likelihood(x, z, labels=y)
        return model.log_likelihood(x, z)

    @tf.function(reduce_retracing=True)
    def chunk(x, y, mean, log_variance, kc, seed):
        batch, dims = tf.shape(mean)[0], tf.shape(mean)[1]
        eps = tf.random.stateless_normal(tf.stack([kc, batch, dims]), seed=seed, dtype=mean.dtype)
        z = mean + tf.exp(0.5 * log_variance) * eps
        # log q(z|x) from eps directly: (z - mean) / sigma = eps exactly
        log_q = -0.5 * tf.reduce_sum(tf.square(eps) + log_variance + log_2pi, axis=-1)
        log_pz = tf.cast(model.prior.log_prob(z), mean.dtype)
        if broadcasts:  # z [kc, B, d] against x [B, ...]: no copies of the images
            log_px = tf.cast(log_likelihood(x, z, y), mean.dtype)
        else:
            flat_z = tf.reshape(z, tf.stack([kc * batch, dims]))
            multiples = tf.concat([[kc], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
            flat_x = tf.tile(x, multiples)
            flat_y = None
            if conditional:
                y_multiples = tf.concat([[kc], tf.ones([tf.rank(y) - 1], tf.int32)], axis=0)
                flat_y = tf.tile(y, y_multiples)
            log_px = tf.reshape(
                tf.cast(log_likelihood(flat_x, flat_z, flat_y), mean.dtype), tf.stack([kc, batch])
            )
        log_w = log_px + log_pz - log_q
        return tf.reduce_logsumexp(log_w, axis=0), tf.reduce_sum(log_px, axis=0)

    return chunk


def _encode(model: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    out = model.encode(x, labels=y) if y is not None else model.encode(x)
    mean, log_variance = out
    return np.asarray(mean, np.float32), np.asarray(log_variance, np.float32)


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def importance_sampled_terms(
    model: Any,
    images: Any,
    k: int = 5000,
    *,
    labels: Any = None,
    batch_k: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-example arrays: ``log_likelihood`` (the IS estimate, nats), ``reconstruction``
    (-E_q log p(x|z), averaged over the same k samples), ``mean`` and ``log_variance``
    of q(z|x). The draws depend only on ``seed`` (stateless RNG; the model's own seed
    generator is not used)."""
    import tensorflow as tf

    _check_model(model)
    k, batch_size = int(k), int(batch_size)
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be positive; got k={k}, batch_size={batch_size}")
    batch_k = min(k, int(batch_k or DEFAULT_BATCH_K))
    images = np.asarray(images, np.float32)
    y_all = None if labels is None else np.asarray(labels)
    if y_all is not None and len(y_all) != len(images):
        raise ValueError(f"{len(y_all)} labels for {len(images)} images")
    chunk = _chunk_function(model, conditional=y_all is not None)
    n = len(images)
    log_p = np.empty(n, np.float64)
    sum_log_px = np.empty(n, np.float64)
    means, log_variances = [], []
    chunks = math.ceil(k / batch_k)
    label = f"importance sampling, k={k}, {n} examples"
    with Progress(math.ceil(n / batch_size) * chunks, label, unit="chunks") as bar:
        for b, (lo, hi) in enumerate(_batches(n, batch_size)):
            x = tf.constant(images[lo:hi])
            y = None if y_all is None else tf.constant(y_all[lo:hi])
            mean, log_variance = _encode(model, x, y)
            means.append(mean)
            log_variances.append(log_variance)
            parts, px = [], np.zeros(hi - lo, np.float64)
            for c, start in enumerate(range(0, k, batch_k)):
                kc = min(batch_k, k - start)
                key = tf.constant([seed, b * 1_000_003 + c], tf.int64)
                lse, spx = chunk(x, y, tf.constant(mean), tf.constant(log_variance), kc, key)
                parts.append(np.asarray(lse, np.float64))
                px += np.asarray(spx, np.float64)
                bar.update()
            # stable combination of the chunks' log-sum-exps, in float64
            log_p[lo:hi] = np.logaddexp.reduce(np.stack(parts), axis=0) - math.log(k)
            sum_log_px[lo:hi] = px
    return {
        "log_likelihood": log_p,
        "reconstruction": -sum_log_px / k,
        "mean": np.concatenate(means) if means else np.zeros((0, 0), np.float32),
        "log_variance": np.concatenate(log_variances) if means else np.zeros((0, 0), np.float32),
    }


def importance_sampled_log_likelihood(
    model: Any,
    images: Any,
    k: int = 5000,
    *,
    labels: Any = None,
    batch_k: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Per-example log p(x) estimates in nats (float64 [N]): log-mean-exp over k draws
    z ~ q(z|x) of log p(x|z) + log p(z) - log q(z|x).

    ``batch_k`` samples x ``batch_size`` examples are decoded at once (default 500 x 100),
    so memory does not grow with k. A lower bound of log p(x) in expectation, tight as
    k -> infinity. ``labels`` go to conditional models (log p(x|y)).
    """
    return importance_sampled_terms(
        model, images, k, labels=labels, batch_k=batch_k, batch_size=batch_size, seed=seed
    )["log_likelihood"]


def bits_per_dim(log_likelihood: Any, dims: int) -> np.ndarray:
    """-log p(x) / (D ln 2): nats per example -> bits per pixel value."""
    return -np.asarray(log_likelihood, np.float64) / (int(dims) * math.log(2.0))


def active_units(means: Any, threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[int, np.ndarray]:
    """Burda et al.'s activity: A_j = Cov_x(E_q[z_j]) (variance over the data of the
    posterior means); returns (number of units with A_j > threshold, A)."""
    means = np.asarray(means, np.float64)
    activity = means.var(axis=0) if len(means) else np.zeros(means.shape[-1])
    return int(np.sum(activity > threshold)), activity


def kl_per_dimension(mean: Any, log_variance: Any) -> np.ndarray:
    """Average over the data of KL(q(z_j|x) || N(0, 1)) for each latent dimension (nats);
    a dimension with KL ~ 0 carries no information (posterior collapse)."""
    mean, log_variance = np.asarray(mean, np.float64), np.asarray(log_variance, np.float64)
    return np.mean(0.5 * (mean**2 + np.exp(log_variance) - 1.0 - log_variance), axis=0)


def _is_binary(images: np.ndarray) -> bool:
    return bool(np.all((images == 0.0) | (images == 1.0)))


def prepare_images(model: Any, images: Any, *, binarize: bool | None, seed: int):
    """Images as the model's likelihood needs them, and a sentence saying what was done."""
    images = np.asarray(images, np.float32)
    kind = getattr(model, "likelihood", None)
    bounded = kind in ("bernoulli", "continuous_bernoulli") and images.size
    if bounded and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(
            f"a {kind} likelihood needs images in [0, 1]; got values in "
            f"[{images.min()}, {images.max()}]"
        )
    binary = _is_binary(images)
    if binarize is None:
        binarize = kind == "bernoulli" and not binary
    if binarize:
        rng = np.random.default_rng(seed)
        images = (rng.random(images.shape) < images).astype(np.float32)
        note = (
            f"binarised once, stochastically (x ~ Bernoulli(pixel intensity), numpy seed "
            f"{seed}): the standard binarised-MNIST protocol for a Bernoulli likelihood"
        )
    elif binary:
        note = "already binary"
    elif kind not in LIKELIHOOD_NAMES:
        note = "used as given"
    else:
        note = "continuous intensities in [0, 1] (densities, not probabilities)"
        if kind == "bernoulli":
            note += "; WARNING: a Bernoulli likelihood on non-binary data is not a likelihood"
    return images, note


def evaluate_likelihood(
    model: Any,
    images: Any,
    k: int = 5000,
    *,
    labels: Any = None,
    batch_k: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    binarize: bool | None = None,
    per_example: bool = False,
) -> dict[str, Any]:
    """ELBO, importance-sampled log-likelihood (nats and bits/dim), KL per latent
    dimension and active units on ``images`` (floats in [0, 1], shape [N, ...]).

    ``binarize=None`` binarises non-binary images once (fixed ``seed``) when the model's
    likelihood is Bernoulli. The ELBO uses the analytic KL and the reconstruction term
    averaged over the same k posterior samples as the estimate. Returns a JSON-ready dict
    (with ``per_example``: also the lists ``log_likelihood_per_example`` and
    ``elbo_per_example``).
    """
    images, note = prepare_images(model, images, binarize=binarize, seed=seed)
    terms = importance_sampled_terms(
        model, images, k, labels=labels, batch_k=batch_k, batch_size=batch_size, seed=seed
    )
    dims = int(np.prod(images.shape[1:]))
    log_p = terms["log_likelihood"]
    kl_dims = kl_per_dimension(terms["mean"], terms["log_variance"])
    kl = float(np.sum(kl_dims))
    elbo_per_example = -terms["reconstruction"] - np.sum(
        0.5
        * (
            terms["mean"].astype(np.float64) ** 2
            + np.exp(terms["log_variance"].astype(np.float64))
            - 1.0
            - terms["log_variance"]
        ),
        axis=1,
    )
    n_active, activity = active_units(terms["mean"])
    n = len(images)
    extra = (
        {
            "log_likelihood_per_example": [float(v) for v in log_p],
            "elbo_per_example": [float(v) for v in elbo_per_example],
        }
        if per_example
        else {}
    )
    stderr = float(np.std(log_p, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "model": getattr(model, "name", type(model).__name__),
        "likelihood": getattr(model, "likelihood", "custom"),
        "data": note,
        "n": n,
        "k": int(k),
        "dims": dims,
        "seed": int(seed),
        "log_likelihood": float(np.mean(log_p)),
        "nll": float(-np.mean(log_p)),
        "nll_stderr": stderr,
        "bits_per_dim": float(np.mean(bits_per_dim(log_p, dims))),
        "elbo": float(np.mean(elbo_per_example)),
        "elbo_bits_per_dim": float(np.mean(bits_per_dim(elbo_per_example, dims))),
        "gap": float(np.mean(log_p - elbo_per_example)),
        "reconstruction": float(np.mean(terms["reconstruction"])),
        "kl": kl,
        "kl_per_dim": [float(v) for v in kl_dims],
        "latent_dim": int(kl_dims.shape[0]),
        "active_units": n_active,
        "active_unit_threshold": ACTIVE_UNIT_THRESHOLD,
        "unit_activity": [float(v) for v in activity],
        **extra,
    }


def report_markdown(result: dict[str, Any], title: str | None = None) -> str:
    """A readable markdown summary of :func:`evaluate_likelihood`'s result."""
    r = result
    kl_dims = np.asarray(r["kl_per_dim"])
    collapsed = int(np.sum(kl_dims < 0.01))
    lines = [
        f"# {title or 'Likelihood evaluation: ' + str(r['model'])}",
        "",
        f"- likelihood p(x|z): {r['likelihood']}; data: {r['n']} examples, {r['dims']} values "
        f"each, {r['data']}",
        f"- importance sampling: k = {r['k']} posterior samples per example (seed {r['seed']})",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| test log-likelihood (IS, k={r['k']}) | {r['log_likelihood']:.2f} nats "
        f"(± {r['nll_stderr']:.2f} s.e. over examples) |",
        f"| negative log-likelihood | {r['nll']:.2f} nats = {r['bits_per_dim']:.4f} bits/dim |",
        f"| ELBO | {r['elbo']:.2f} nats = {r['elbo_bits_per_dim']:.4f} bits/dim (negated) |",
        f"| gap log p(x) - ELBO | {r['gap']:.2f} nats |",
        f"| reconstruction -E_q log p(x\\|z) | {r['reconstruction']:.2f} nats |",
        f"| KL(q(z\\|x) \\|\\| p(z)) | {r['kl']:.2f} nats |",
        f"| active units (Cov_x E_q[z_j] > {r['active_unit_threshold']}) | "
        f"{r['active_units']} of {r['latent_dim']} |",
        f"| dimensions with KL < 0.01 nats (collapsed) | {collapsed} of {r['latent_dim']} |",
        "",
        "KL per latent dimension (nats): " + ", ".join(f"{v:.3f}" for v in r["kl_per_dim"]),
        "",
    ]
    return "\n".join(lines)


def evaluate_bound(
    model: Any,
    images: Any,
    *,
    labels: Any = None,
    num_timesteps: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A :class:`zoo.tasks.BoundModel`'s variational bound on ``images`` (floats in [0, 1] on 256
    levels, [N, ...]): the mean bound and each term in bits/dim and nats, with the standard
    error of the mean bound over examples. JSON-ready."""
    images = np.asarray(images, np.float32)
    dims, n = int(np.prod(images.shape[1:])), len(images)
    raw = model.variational_bound(images, labels=labels, num_timesteps=num_timesteps, seed=seed)
    bits = {k: np.asarray(v, np.float64) for k, v in raw.items() if np.ndim(v) == 1}
    total = bits.pop("total")
    nats = dims * math.log(2.0)
    result: dict[str, Any] = {
        "model": getattr(model, "name", type(model).__name__),
        "likelihood": "variational bound (discrete, 256 levels)",
        "data": "8-bit levels in [0, 1] (a bound on a discrete probability)",
        "n": n,
        "dims": dims,
        "seed": int(seed),
        "estimator": "exact sum over the terms" if num_timesteps is None else (
            f"stratified Monte Carlo, {int(num_timesteps)} terms per example"),
        "bits_per_dim": float(np.mean(total)),
        "bits_per_dim_stderr": float(np.std(total, ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "nll_bound": float(np.mean(total) * nats),
        "terms": list(bits),
    }  # fmt: skip
    for key, values in bits.items():
        result[f"{key}_bits_per_dim"] = float(np.mean(values))
        result[f"{key}_nats"] = float(np.mean(values) * nats)
    result["terms_sum_bits_per_dim"] = float(np.mean(sum(bits.values())))
    return result


def bound_report_markdown(result: dict[str, Any], title: str | None = None) -> str:
    """A readable markdown summary of :func:`evaluate_bound`'s result."""
    r = result
    lines = [
        f"# {title or 'Likelihood evaluation: ' + str(r['model'])}",
        "",
        f"- {r['likelihood']}: {r['n']} examples, {r['dims']} values each, {r['data']}",
        f"- estimator: {r['estimator']} (seed {r['seed']})",
        "",
        "| quantity | nats | bits/dim |",
        "|---|---|---|",
        f"| -log p(x) <= bound (± s.e. over examples) | {r['nll_bound']:.2f} | "
        f"{r['bits_per_dim']:.4f} ± {r['bits_per_dim_stderr']:.4f} |",
        *(
            f"| term: {k} | {r[f'{k}_nats']:.2f} | {r[f'{k}_bits_per_dim']:.4f} |"
            for k in r["terms"]
        ),
        "",
    ]
    return "\n".join(lines)


def spread_indices(total: int, n: int) -> np.ndarray:
    """``n`` indices evenly spread over ``range(total)`` (all of them if n >= total)."""
    return np.unique(np.linspace(0, total - 1, min(int(n), total)).round().astype(int))


def evaluation_images(
    model: Any, *, n: int = 1000, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of the bundled MNIST sample's ``split``, evenly spread over it (the
    file is ordered by class, so its first images are all zeros), as floats in [0, 1]
    resized to the model's image shape, and their labels."""
    from zoo.data import from_sample, load_sample

    shape = tuple(model.image_shape)
    images, labels = load_sample(split)
    index = spread_indices(len(labels), n)
    if shape == (28, 28, 1):
        images = images[index].astype(np.float32) / 255.0
    else:
        ds = list(from_sample(split, image_shape=shape).as_numpy_iterator())
        images = np.stack([ds[i] for i in index]).astype(np.float32)
    return images, labels[index]


def evaluate_model(
    model: Any,
    out_dir: str | os.PathLike,
    *,
    target: str,
    k: int = 5000,
    n: int = 1000,
    split: str = "test",
    batch_size: int = 100,
    batch_k: int | None = None,
    seed: int = 0,
    images: Any = None,
    labels: Any = None,
    num_timesteps: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """``zoo evaluate --task likelihood`` on a loaded model: evaluate on ``n`` images of
    the bundled MNIST sample's ``split`` (or on ``images``), write ``likelihood.json`` and
    ``likelihood.md`` into ``out_dir`` and TensorBoard scalars ``likelihood/*`` there.
    A :class:`zoo.tasks.LikelihoodModel` is evaluated by importance sampling (``k``, ``batch_k``,
    ``batch_size``), a :class:`zoo.tasks.BoundModel` by its bound (``num_timesteps``; None =
    exact).
    ``target`` names what was evaluated in the report (a run folder, ``.keras`` file or
    model name; :func:`zoo.recipes.evaluation.evaluate_likelihood_run` loads it).
    Conditional models are evaluated given the true labels (log p(x|y)). Returns
    (result, out_dir)."""
    import tensorflow as tf

    bound = isinstance(model, BoundModel) and not isinstance(model, LikelihoodModel)
    if not bound:
        _check_model(model)
    if images is None:
        images, sample_labels = evaluation_images(model, n=n, split=split)
        labels = sample_labels if labels is None else labels
        source = (
            f"bundled MNIST sample, split {split!r}, {len(images)} images evenly spread "
            "over the split"
        )
    else:
        images = np.asarray(images, np.float32)[:n]
        labels = None if labels is None else np.asarray(labels)[:n]
        source = f"{len(images)} given images"
    conditional = bool(getattr(model, "conditional", False))
    labels = labels if conditional else None
    if bound:
        result = evaluate_bound(
            model, images, labels=labels, num_timesteps=num_timesteps, seed=seed
        )
        markdown, scalars = bound_report_markdown, ["nll_bound", "bits_per_dim"]
        scalars += [f"{term}_bits_per_dim" for term in result["terms"]]
    else:
        result = evaluate_likelihood(
            model, images, k, labels=labels, batch_k=batch_k, batch_size=batch_size, seed=seed
        )
        markdown = report_markdown
        scalars = ["nll", "bits_per_dim", "elbo", "gap", "kl", "active_units"]
    result["source"] = source + ("; conditioned on the true labels" if conditional else "")
    result["target"] = str(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "likelihood.json", json.dumps(result, indent=1))
    atomic_write_text(
        out / "likelihood.md",
        markdown(result, f"Likelihood evaluation: {result['model']}")
        + f"\nData source: {source}.\n",
    )
    with tf.summary.create_file_writer(str(out)).as_default():
        for key in scalars:
            tf.summary.scalar(f"likelihood/{key}", float(result[key]), step=0)
        for j, value in enumerate(result.get("kl_per_dim", ())):
            tf.summary.scalar(f"likelihood/kl_dim_{j:02d}", value, step=0)
    return result, out
