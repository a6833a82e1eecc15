"""Latent-space tools for VAEs: interpolation (linear and spherical), traversals one
dimension at a time, prior samples, and a 2-D scatter of the posterior means coloured by
label (PCA when the latent has more than two dimensions).

Functions return image arrays ``[N, H, W, C]`` in [0, 1] (or a matplotlib ``Figure``);
:func:`save_grid` writes a PNG grid (``zoo.data.image_grid`` + ``zoo.data.save_png``,
atomic) and :func:`log_grid` logs it to TensorBoard. :class:`LatentSpaceLogger` is the
per-epoch callback that does all of it for a run. Nothing here moves a model's seed
generator: latent points come from numpy with explicit seeds and encodings use the
posterior mean, so logging never changes a training run.

Plots use matplotlib's object API with the Agg canvas (``Figure`` +
``FigureCanvasAgg``), never ``pyplot``, so they are thread-safe and need no display.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo import data as zdata
from zoo.fileio import atomic_write_bytes

METHODS = ("linear", "slerp")


# -- interpolation between latent points -------------------------------------------------
def lerp(a: Any, b: Any, steps: int = 8) -> np.ndarray:
    """``steps`` points (1 - t) a + t b for t = 0 .. 1, shape [steps, *a.shape]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.linspace(0.0, 1.0, _check_steps(steps)).reshape(-1, *([1] * a.ndim))
    return ((1.0 - t) * a + t * b).astype(np.float32)


def slerp(a: Any, b: Any, steps: int = 8, *, eps: float = 1e-7) -> np.ndarray:
    """Spherical linear interpolation (Shoemake, 1985; White, 2016 for generative models):
    sin((1 - t) W) / sin W * a + sin(t W) / sin W * b with W the angle between a and b.

    Unit vectors stay on the unit sphere and the angle moves uniformly (the midpoint is at
    W / 2 from both ends); for Gaussian latents it avoids the low-norm middle of a linear
    path. Nearly parallel vectors fall back to :func:`lerp`.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    steps = _check_steps(steps)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < eps or nb < eps:
        return lerp(a, b, steps)
    cos = float(np.clip(np.dot(a.ravel() / na, b.ravel() / nb), -1.0, 1.0))
    omega = np.arccos(cos)
    if np.sin(omega) < eps:
        return lerp(a, b, steps)
    t = np.linspace(0.0, 1.0, steps).reshape(-1, *([1] * a.ndim))
    out = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    return out.astype(np.float32)


def _check_steps(steps: int) -> int:
    steps = int(steps)
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (both endpoints); got {steps}")
    return steps


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(METHODS)}")
    return method


# -- model helpers ----------------------------------------------------------------------
def _is_image(model: Any, x: np.ndarray) -> bool:
    return tuple(x.shape[-3:]) == tuple(model.image_shape) and x.ndim >= 3


def encode_mean(model: Any, images: Any, labels: Any = None) -> np.ndarray:
    """Posterior means E_q[z|x] of images [N, H, W, C] (deterministic)."""
    images = np.asarray(images, np.float32)
    mean, _ = model.encode(images, labels) if labels is not None else model.encode(images)
    return np.asarray(mean, np.float32)


def decode(model: Any, z: Any, labels: Any = None) -> np.ndarray:
    """Images (likelihood means, in [0, 1]) for latent points z [N, latent_dim]."""
    z = np.asarray(z, np.float32)
    if labels is not None:
        return np.asarray(model.generate(z, labels))
    return np.asarray(model.decode(z))


def as_latent(model: Any, x: Any, label: Any = None) -> np.ndarray:
    """A latent point from a latent vector [latent_dim] or an image [H, W, C] (encoded to
    its posterior mean)."""
    x = np.asarray(x, np.float32)
    if x.shape == (model.latent_dim,):
        return x
    if _is_image(model, x) and x.ndim == 3:
        labels = None if label is None else np.asarray([label])
        return encode_mean(model, x[None], labels)[0]
    raise ValueError(
        f"expected a latent point of shape ({model.latent_dim},) or an image of shape "
        f"{tuple(model.image_shape)}; got {x.shape}"
    )


def interpolate(
    model: Any,
    a: Any,
    b: Any,
    steps: int = 8,
    *,
    method: str = "slerp",
    label: Any = None,
) -> np.ndarray:
    """Images along a path between two inputs or two latent points: [steps, H, W, C].

    Images are encoded to their posterior means; ``method`` is "slerp" (default) or
    "linear"; ``label`` conditions a CVAE (one class for the whole path).
    """
    za, zb = as_latent(model, a, label), as_latent(model, b, label)
    path = (slerp if _check_method(method) == "slerp" else lerp)(za, zb, steps)
    labels = None if label is None else np.full(len(path), label)
    return decode(model, path, labels)


def interpolation_grid(
    model: Any,
    images: Any,
    steps: int = 8,
    *,
    method: str = "slerp",
    labels: Any = None,
) -> np.ndarray:
    """Rows of interpolations between consecutive pairs of ``images`` (0-1, 2-3, ...):
    [pairs * steps, H, W, C], for a grid with ``ncols=steps``."""
    images = np.asarray(images, np.float32)
    if len(images) < 2:
        raise ValueError("interpolation_grid needs at least two images")
    rows = []
    for i in range(0, len(images) - 1, 2):
        label = None if labels is None else labels[i]
        rows.append(interpolate(model, images[i], images[i + 1], steps, method=method, label=label))
    return np.concatenate(rows)


def traverse(
    model: Any,
    origin: Any = None,
    *,
    dims: Sequence[int] | None = None,
    values: Sequence[float] | None = None,
    label: Any = None,
) -> np.ndarray:
    """Latent traversals: from ``origin`` (a latent point, an image, or None for z = 0),
    vary one dimension at a time over ``values`` (default -3 .. 3 in 7 steps) keeping the
    others fixed. Returns [len(dims) * len(values), H, W, C]: one row per dimension."""
    d = int(model.latent_dim)
    z0 = np.zeros(d, np.float32) if origin is None else as_latent(model, origin, label)
    dims = list(range(d)) if dims is None else [int(j) for j in dims]
    bad = [j for j in dims if not 0 <= j < d]
    if bad:
        raise ValueError(f"dims {bad} out of range for a latent of {d} dimensions")
    values = np.linspace(-3.0, 3.0, 7) if values is None else np.asarray(values, np.float32)
    points = np.repeat(z0[None], len(dims) * len(values), axis=0)
    for row, j in enumerate(dims):
        points[row * len(values) : (row + 1) * len(values), j] = values
    labels = None if label is None else np.full(len(points), label)
    return decode(model, points, labels)


def sample_prior(model: Any, n: int = 64, *, seed: int = 0, labels: Any = None) -> np.ndarray:
    """``n`` images decoded from z ~ N(0, I) drawn by numpy with ``seed``."""
    z = np.random.default_rng(seed).standard_normal((int(n), model.latent_dim))
    return decode(model, z.astype(np.float32), labels)


# -- 2-D scatter of the latent space ----------------------------------------------------
def project_2d(points: Any) -> tuple[np.ndarray, str]:
    """The points themselves when 2-D, else their projection on the first two principal
    components (numpy SVD of the centred points); returns (xy, axis description)."""
    points = np.asarray(points, np.float64)
    if points.shape[1] == 1:
        return np.c_[points[:, 0], np.zeros(len(points))], "z_0 (1-D latent)"
    if points.shape[1] == 2:
        return points, "z_0, z_1"
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    explained = s**2 / max(np.sum(s**2), 1e-12)
    xy = centred @ vt[:2].T
    return xy, f"PCA of {points.shape[1]}-D posterior means ({100 * explained[:2].sum():.0f}% var.)"


def latent_scatter(
    model: Any,
    images: Any,
    labels: Any = None,
    *,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    condition_on_labels: bool | None = None,
):
    """A matplotlib Figure of the posterior means of ``images`` in 2-D (PCA beyond 2-D),
    coloured by ``labels``; written atomically as PNG to ``path`` when given. A CVAE is
    encoded given the labels (``condition_on_labels`` defaults to the model's
    ``conditional``)."""
    from matplotlib.figure import Figure

    conditional = getattr(model, "conditional", False)
    use_labels = conditional if condition_on_labels is None else condition_on_labels
    means = encode_mean(model, images, labels if (use_labels and labels is not None) else None)
    xy, axes = project_2d(means)
    fig = Figure(figsize=(5.0, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7)
    else:
        labels = np.asarray(labels)
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
        fig.colorbar(points, ax=ax, label="label")
    ax.set_title(title or f"{getattr(model, 'name', 'model')}: latent space ({axes})", fontsize=9)
    ax.set_xlabel("component 1" if "PCA" in axes else "z_0")
    ax.set_ylabel("component 2" if "PCA" in axes else "z_1")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def figure_png(fig) -> bytes:
    """The figure rendered by the Agg canvas as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def figure_array(fig) -> np.ndarray:
    """The figure as an RGB uint8 array [H, W, 3] (for TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write the figure as PNG atomically (``zoo.fileio.atomic_write_bytes``)."""
    return atomic_write_bytes(path, figure_png(fig))


# -- output -----------------------------------------------------------------------------
def save_grid(images: Any, path: str | os.PathLike, ncols: int | None = None) -> Path:
    """Tile images into one PNG grid (``zoo.data.image_grid``) written atomically."""
    return Path(zdata.save_png(zdata.image_grid(images, ncols=ncols), path))


def log_grid(writer: Any, tag: str, images: Any, step: int, ncols: int | None = None) -> None:
    """Log an image grid to TensorBoard with ``tf.summary.image``; ``writer`` is a
    ``tf.summary`` file writer or a folder."""
    import tensorflow as tf

    if isinstance(writer, (str, os.PathLike)):
        writer = tf.summary.create_file_writer(str(writer))
    grid = zdata.image_grid(images, ncols=ncols)
    with writer.as_default(), tf.summary.record_if(True):  # whatever a TensorBoard callback set
        tf.summary.image(tag, grid[None].astype("float32") / 255.0, step=step)
    writer.flush()


class LatentSpaceLogger(keras.callbacks.Callback):
    """Every ``every`` epochs, for a VAE run: an interpolation grid between fixed pairs
    of images, a traversal grid (``traverse_dims`` dimensions from the first image's
    posterior mean) and the 2-D latent scatter coloured by label, as PNG files in
    ``run_dir/latent/`` and TensorBoard images (``latent/interpolation``,
    ``latent/traversal``, ``latent/scatter``) in ``run_dir/train``.

    ``images``/``labels`` are fixed arrays (labels may be None: uncoloured scatter).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        images: Any,
        labels: Any = None,
        *,
        every: int = 1,
        steps: int = 8,
        pairs: int = 4,
        traverse_dims: int = 8,
        method: str = "slerp",
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / "latent"
        self.images = np.asarray(images, np.float32)
        self.labels = None if labels is None else np.asarray(labels)
        self.every = max(int(every), 1)
        self.steps, self.pairs = int(steps), int(pairs)
        self.traverse_dims = int(traverse_dims)
        self.method = _check_method(method)
        self.written: list[Path] = []
        self._writer = None

    @classmethod
    def from_dataset(
        cls, run_dir: str | os.PathLike, dataset: Any, n: int = 500, *, seed: int = 0, **kw
    ) -> LatentSpaceLogger:
        """Take ``n`` examples (shuffled with ``seed``) from an unbatched dataset of images
        or (images, labels) pairs."""
        from zoo.data.batches import unpack_batch

        taken = [unpack_batch(e) for e in dataset.shuffle(4096, seed=seed).take(int(n))]
        images = np.stack([np.asarray(x) for x, _ in taken])
        labelled = bool(taken) and taken[0][1] is not None
        labels = np.asarray([int(np.asarray(y)) for _, y in taken]) if labelled else None
        return cls(run_dir, images, labels, **kw)

    @property
    def writer(self):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.run_dir / "train"))
        return self._writer

    def grids(self) -> dict[str, tuple[np.ndarray, int]]:
        """name -> (images, ncols) for this epoch."""
        model = self.model
        conditional = getattr(model, "conditional", False)
        labels = self.labels if conditional else None
        n = min(2 * self.pairs, len(self.images) - len(self.images) % 2)
        out = {}
        if n >= 2:
            out["interpolation"] = (
                interpolation_grid(
                    model, self.images[:n], self.steps, method=self.method,
                    labels=None if labels is None else labels[:n],
                ),
                self.steps,
            )  # fmt: skip
        if len(self.images):
            dims = list(range(min(self.traverse_dims, model.latent_dim)))
            label = None if labels is None else labels[0]
            out["traversal"] = (traverse(model, self.images[0], dims=dims, label=label), 7)
        return out

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        import tensorflow as tf

        step = epoch + 1
        for kind, (images, ncols) in self.grids().items():
            path = self.folder / f"{kind}_epoch{step:03d}.png"
            save_grid(images, path, ncols=ncols)
            self.written.append(path)
            log_grid(self.writer, f"latent/{kind}", images, step, ncols=ncols)
        if len(self.images) >= 3:
            fig = latent_scatter(self.model, self.images, self.labels)
            path = save_figure(fig, self.folder / f"scatter_epoch{step:03d}.png")
            self.written.append(path)
            with self.writer.as_default(), tf.summary.record_if(True):
                tf.summary.image("latent/scatter", figure_array(fig)[None] / 255.0, step=step)
            self.writer.flush()
