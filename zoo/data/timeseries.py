"""Time-series data for sequence models (e.g. a recurrent autoencoder for anomaly detection).

No time-series dataset ships with the zoo, so the offline default is
:func:`synthetic_series`: a **synthetic** generator whose anomalies are injected
with known kind, position and extent. It is meant for smoke tests, tutorials and
checking that a detector finds what it should; it says nothing about how a model
does on real data. Well-known real benchmarks you can download and load yourself
(e.g. into ``[N, T, F]`` arrays for :func:`from_series`) include the Numenta
Anomaly Benchmark (NAB), Yahoo Webscope S5, the Server Machine Dataset (SMD),
SMAP/MSL (NASA telemetry), SWaT/WADI (water plants) and the UCR anomaly archive;
none of them is bundled.

Generative process of :func:`synthetic_series` (``t = 0 .. length-1``):

* **normal signal** - each series has a shared latent sinusoid
  ``z(t) = a sin(2 pi t / P + phi)`` (period ``P`` in [28, 64] steps, amplitude
  ``a`` in [0.3, 0.6]). Feature ``f`` is ``w_f z(t) + b_f sin(2 pi t / Q_f + psi_f)``:
  the shared component with a loading ``|w_f|`` in [0.5, 1] and random sign (so
  features are correlated) plus a feature-specific sinusoid (period ``Q_f`` in
  [16, 24], amplitude ``b_f`` in [0.2, 0.5]; the two period ranges are disjoint so
  the components never cancel), plus i.i.d. Gaussian noise of std
  ``noise``. Normal values stay within about [-1.5, 1.5].
* **anomalies** - ``round(anomaly_fraction * n_series)`` series, chosen by the
  seed, get exactly one anomaly each; the kinds are spread evenly (counts differ
  by at most one) over ``kinds``. ``std`` below is the per-feature std of that
  series' normal signal:

  - ``"spike"``: 1-3 consecutive steps on a random non-empty subset of features
    are pushed 4-6 std away from the feature's mean (outwards, so they are
    extreme values of the series);
  - ``"level_shift"``: from a random start either to the end or for at least 20
    steps, a constant offset of 1-2 std (one sign per anomaly) is added to a
    random non-empty subset of features;
  - ``"pattern_change"``: for a window of at least 20 steps every feature's
    periodic pattern runs 3-5 times faster (same amplitudes and noise, continuous
    at the window's start), so values stay in the normal range.

``point_labels`` is True exactly on the steps that were changed. The normal
signal depends only on ``seed`` and the shapes, never on the anomaly settings:
``synthetic_series(..., anomaly_fraction=0.0)`` with the same seed is the clean
version of the same series, which is handy for evaluating reconstructions.

The windowing helpers (:func:`sliding_windows`, :func:`window_labels`,
:func:`pad_sequences`, :func:`sequence_mask`, :func:`per_sequence_scores`,
:func:`standardize`) work on numpy arrays of shape ``[T, F]`` or ``[N, T, F]``;
:func:`from_series` turns ``[N, T, F]`` into an unbatched ``tf.data.Dataset``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data.core import DataError

ANOMALY_KINDS = ("spike", "level_shift", "pattern_change")
WINDOW_RULES = ("any", "majority")
REDUCTIONS = ("mean", "max")
TRUNCATE = ("post", "pre")

MIN_LENGTH = 32
_LATENT_PERIODS = (28.0, 64.0)  # shared slow component
_OWN_PERIODS = (16.0, 24.0)  # per-feature faster component
_MIN_WINDOW = 20  # shortest level shift / pattern change


@dataclass
class SyntheticSeries:
    """Output of :func:`synthetic_series`: the series and the ground truth of the anomalies."""

    series: np.ndarray  # float32 [n_series, length, n_features]
    point_labels: np.ndarray  # bool [n_series, length], True where an injected anomaly is active
    labels: np.ndarray  # bool [n_series], True if the series contains an anomaly
    kinds: list[str | None]  # per series: the injected kind or None
    spans: list[tuple[int, int] | None]  # per series: [start, end) of the anomaly or None


# --------------------------------------------------------------------------- validation


def _int_arg(name: str, value: Any, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}; {hint}")
    return int(value)


def _check_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in ANOMALY_KINDS]
    if unknown or not kinds:
        what = f"unknown anomaly kind(s) {unknown!r}" if unknown else "kinds is empty"
        raise DataError(f"{what}; use a non-empty subset of {ANOMALY_KINDS!r}")
    if len(set(kinds)) != len(kinds):
        raise DataError(f"kinds has duplicates: {kinds!r}; list each kind at most once")
    return kinds


def _array(name: str, value: Any, ndims: Sequence[int], hint: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim not in ndims:
        shapes = " or ".join(f"{n}-d" for n in ndims)
        raise DataError(f"{name} must be {shapes}, got shape {arr.shape}; {hint}")
    return arr


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{name} must be real numbers, got dtype {arr.dtype}; convert it to float")
    if not np.all(np.isfinite(arr)):
        raise DataError(
            f"{name} contains NaN or inf; fill or drop missing values first "
            "(e.g. interpolate, or np.nan_to_num)"
        )


# --------------------------------------------------------------------------- synthetic data


def _sinusoid(t: np.ndarray, amp: np.ndarray, period: np.ndarray, phase: np.ndarray) -> np.ndarray:
    return amp * np.sin(2.0 * np.pi * t / period + phase)


def _spread_kinds(n: int, kinds: tuple[str, ...], rng: np.random.Generator) -> list[str]:
    """``n`` kinds, each of ``kinds`` used ``n // len(kinds)`` or one more times, shuffled."""
    counts = [n // len(kinds)] * len(kinds)
    for i in rng.permutation(len(kinds))[: n % len(kinds)]:
        counts[i] += 1
    spread = [k for k, c in zip(kinds, counts, strict=True) for _ in range(c)]
    return [spread[i] for i in rng.permutation(n)]


def synthetic_series(
    n_series: int = 200,
    length: int = 128,
    n_features: int = 3,
    *,
    anomaly_fraction: float = 0.2,
    kinds: str | Sequence[str] = ANOMALY_KINDS,
    noise: float = 0.05,
    seed: int = 0,
) -> SyntheticSeries:
    """Synthetic multivariate periodic series with injected anomalies of known kinds.

    See the module docstring for the generative process. Deterministic for a
    given ``seed``; the normal signal does not depend on ``anomaly_fraction`` or
    ``kinds``, so ``anomaly_fraction=0.0`` gives the clean counterpart.
    """
    n_series = _int_arg("n_series", n_series, 1, "pass e.g. n_series=200")
    length = _int_arg("length", length, MIN_LENGTH, "pass e.g. length=128")
    n_features = _int_arg("n_features", n_features, 1, "pass e.g. n_features=3")
    seed = _int_arg("seed", seed, 0, "pass a non-negative integer seed")
    try:
        fraction = float(anomaly_fraction)
        noise_std = float(noise)
    except (TypeError, ValueError):
        fraction = noise_std = float("nan")
    if not 0.0 <= fraction <= 1.0:
        raise DataError(
            f"anomaly_fraction must be in [0, 1], got {anomaly_fraction!r}; "
            "pass e.g. anomaly_fraction=0.2 (0.0 for clean series)"
        )
    if not (np.isfinite(noise_std) and noise_std >= 0.0):
        raise DataError(f"noise must be a finite std >= 0, got {noise!r}; pass e.g. noise=0.05")
    kinds = _check_kinds(kinds)

    base_seed, anomaly_seed = np.random.SeedSequence(seed).spawn(2)
    base_rng, anomaly_rng = np.random.default_rng(base_seed), np.random.default_rng(anomaly_seed)

    # Normal signal (depends on the seed and the shapes only).
    n, feats = n_series, n_features
    lat_amp = base_rng.uniform(0.3, 0.6, (n, 1, 1))
    lat_period = base_rng.uniform(*_LATENT_PERIODS, (n, 1, 1))
    lat_phase = base_rng.uniform(0.0, 2.0 * np.pi, (n, 1, 1))
    loading = base_rng.uniform(0.5, 1.0, (n, 1, feats))
    loading *= base_rng.choice([-1.0, 1.0], (n, 1, feats))
    own_amp = base_rng.uniform(0.2, 0.5, (n, 1, feats))
    own_period = base_rng.uniform(*_OWN_PERIODS, (n, 1, feats))
    own_phase = base_rng.uniform(0.0, 2.0 * np.pi, (n, 1, feats))
    eps = base_rng.standard_normal((n, length, feats)) * noise_std

    # A component's amplitude/period/phase per series: [n, 1, F] (latent broadcast over F).
    amps = (lat_amp * loading, own_amp)
    periods = (np.broadcast_to(lat_period, (n, 1, feats)), own_period)
    phases = (np.broadcast_to(lat_phase, (n, 1, feats)), own_phase)
    t = np.arange(length, dtype=np.float64)[None, :, None]
    base = sum(_sinusoid(t, a, p, ph) for a, p, ph in zip(amps, periods, phases, strict=True))
    base = base + eps
    mean, std = base.mean(axis=1), base.std(axis=1)  # [n, F]

    series = base.copy()
    point_labels = np.zeros((n, length), dtype=bool)
    out_kinds: list[str | None] = [None] * n
    spans: list[tuple[int, int] | None] = [None] * n

    n_anomalous = round(fraction * n)
    chosen = np.sort(anomaly_rng.choice(n, n_anomalous, replace=False))
    rng = anomaly_rng
    for i, kind in zip(chosen, _spread_kinds(n_anomalous, kinds, rng), strict=True):
        if kind == "spike":
            steps = int(rng.integers(1, 4))
            start = int(rng.integers(0, length - steps + 1))
            end = start + steps
            affected = rng.choice(feats, int(rng.integers(1, feats + 1)), replace=False)
            size = rng.uniform(4.0, 6.0) * std[i, affected]
            outward = np.where(series[i, start:end, affected] >= mean[i, affected][:, None], 1, -1)
            series[i, start:end, affected] += outward * size[:, None]
        elif kind == "level_shift":
            start = int(rng.integers(length // 8, length - _MIN_WINDOW + 1))
            to_end = rng.random() < 0.5
            end = length if to_end else int(rng.integers(start + _MIN_WINDOW, length + 1))
            affected = rng.choice(feats, int(rng.integers(1, feats + 1)), replace=False)
            offset = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0, len(affected))
            series[i, start:end, affected] += (offset * std[i, affected])[:, None]
        else:  # pattern_change
            width = int(rng.integers(_MIN_WINDOW, max(_MIN_WINDOW, length // 3) + 1))
            start = int(rng.integers(0, length - width + 1))
            end = start + width
            speedup = rng.uniform(3.0, 5.0)
            anchor = start - 1  # the faster pattern continues from the last normal step
            steps = np.arange(start, end, dtype=np.float64)[:, None]
            fast = np.zeros((width, feats))
            for a, p, ph in zip(amps, periods, phases, strict=True):
                theta = 2.0 * np.pi * anchor / p[i] + ph[i]
                fast += a[i] * np.sin(theta + 2.0 * np.pi * speedup * (steps - anchor) / p[i])
            series[i, start:end] = fast + eps[i, start:end]
        point_labels[i, start:end] = True
        out_kinds[i] = kind
        spans[i] = (start, end)

    return SyntheticSeries(
        series=series.astype(np.float32),
        point_labels=point_labels,
        labels=point_labels.any(axis=1),
        kinds=out_kinds,
        spans=spans,
    )


# --------------------------------------------------------------------------- windows


def _window_args(size: Any, stride: Any, length: int) -> tuple[int, int]:
    size = _int_arg("size", size, 1, "pass the window length in steps, e.g. size=32")
    stride = _int_arg("stride", stride, 1, "pass e.g. stride=1 (every step) or stride=size")
    if size > length:
        raise DataError(
            f"window size={size} is longer than the series ({length} steps); "
            f"use size <= {length} or pad the series first (pad_sequences)"
        )
    return size, stride


def _windows(arr: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Windows over axis 1 of ``[N, T, ...]`` -> ``[N * n_windows, size, ...]``."""
    view = np.lib.stride_tricks.sliding_window_view(arr, size, axis=1)[:, ::stride]
    view = np.moveaxis(view, -1, 2)  # [N, n_windows, size, ...]
    return view.reshape(-1, *view.shape[2:]).copy()


def sliding_windows(series: np.ndarray, size: int, stride: int = 1) -> np.ndarray:
    """Cut ``[T, F]`` into ``[n_windows, size, F]``, or ``[N, T, F]`` into ``[N * n_windows, ...]``.

    Window ``j`` starts at step ``j * stride``; ``n_windows = (T - size) // stride + 1``
    (a tail shorter than ``size`` is dropped). Windows of series ``i`` come before
    those of series ``i + 1``. The dtype is kept.
    """
    arr = _array(
        "series",
        series,
        (2, 3),
        "pass [length, features] or [n_series, length, features] (x[..., None] adds a "
        "feature axis to univariate data)",
    )
    batched = arr if arr.ndim == 3 else arr[None]
    size, stride = _window_args(size, stride, batched.shape[1])
    return _windows(batched, size, stride)


def window_labels(
    point_labels: np.ndarray, size: int, stride: int = 1, *, rule: str = "any"
) -> np.ndarray:
    """One bool per window of :func:`sliding_windows` from per-step labels ``[T]`` or ``[N, T]``.

    ``rule="any"`` marks a window with at least one anomalous step, ``"majority"``
    one where more than half of its steps are anomalous.
    """
    if rule not in WINDOW_RULES:
        raise DataError(f"unknown window rule {rule!r}; use one of {', '.join(WINDOW_RULES)}")
    arr = _array(
        "point_labels",
        point_labels,
        (1, 2),
        "pass per-step labels of shape [length] or [n_series, length]",
    ).astype(bool)
    batched = arr if arr.ndim == 2 else arr[None]
    size, stride = _window_args(size, stride, batched.shape[1])
    counts = _windows(batched, size, stride).sum(axis=1)
    return counts > 0 if rule == "any" else 2 * counts > size


# --------------------------------------------------------------------------- variable length


def pad_sequences(
    sequences: Sequence[np.ndarray],
    maxlen: int | None = None,
    *,
    value: float = 0.0,
    truncate: str = "post",
) -> tuple[np.ndarray, np.ndarray]:
    """Pad variable-length ``[T_i, F]`` arrays to float32 ``[N, maxlen, F]`` plus int32 lengths.

    Padding (``value``) goes at the end. ``maxlen`` defaults to the longest
    sequence; longer sequences are cut, keeping the first (``truncate="post"``) or
    the last (``"pre"``) ``maxlen`` steps. ``lengths[i]`` counts the real steps.
    """
    if truncate not in TRUNCATE:
        raise DataError(f"unknown truncate {truncate!r}; use one of {', '.join(TRUNCATE)}")
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        sequences = list(sequences)
    arrays = [
        _array(
            f"sequences[{i}]",
            s,
            (2,),
            "each sequence must be [steps, features] (s[:, None] for univariate data)",
        )
        for i, s in enumerate(sequences)
    ]
    if not arrays:
        raise DataError("sequences is empty; pass a list of [steps, features] arrays")
    widths = {a.shape[1] for a in arrays}
    if len(widths) != 1:
        raise DataError(
            f"sequences have different feature counts {sorted(widths)}; "
            "every sequence needs the same number of features"
        )
    for i, a in enumerate(arrays):
        _check_finite(f"sequences[{i}]", a)
    longest = max(a.shape[0] for a in arrays)
    if maxlen is None:
        maxlen = max(longest, 1)
    maxlen = _int_arg("maxlen", maxlen, 1, "pass a positive length or None for the longest")
    out = np.full((len(arrays), maxlen, widths.pop()), value, dtype=np.float32)
    lengths = np.zeros(len(arrays), dtype=np.int32)
    for i, a in enumerate(arrays):
        kept = a[:maxlen] if truncate == "post" else a[max(a.shape[0] - maxlen, 0) :]
        out[i, : len(kept)] = kept
        lengths[i] = len(kept)
    return out, lengths


def _check_lengths(lengths: Any, n: int | None, maxlen: int) -> np.ndarray:
    arr = _array("lengths", lengths, (1,), "pass one length per sequence (shape [N])")
    if n is not None and len(arr) != n:
        raise DataError(f"got {len(arr)} lengths for {n} sequences; pass one length per sequence")
    integral = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0)
    )
    if not integral:
        raise DataError(f"lengths must be integers, got {arr.dtype} values; pass step counts")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > maxlen):
        raise DataError(
            f"lengths must be in [0, {maxlen}], got values in [{arr.min()}, {arr.max()}]; "
            "use the lengths returned by pad_sequences"
        )
    return arr


def sequence_mask(lengths: np.ndarray, maxlen: int) -> np.ndarray:
    """Bool ``[N, maxlen]`` mask, True on the first ``lengths[i]`` steps of row ``i``."""
    maxlen = _int_arg("maxlen", maxlen, 1, "pass the padded length, e.g. padded.shape[1]")
    arr = _check_lengths(lengths, None, maxlen)
    return np.arange(maxlen)[None, :] < arr[:, None]


def top_step_count(valid_steps: Any, top_fraction: float) -> np.ndarray:
    """How many of a sequence's largest step scores a top-fraction score averages:
    ``max(1, floor(top_fraction * valid_steps + 0.5))`` (round half up), per sequence."""
    f = check_top_fraction(top_fraction)
    valid = np.asarray(valid_steps, np.float32)
    return np.maximum(1, np.floor(np.float32(f) * valid + np.float32(0.5))).astype(np.int64)


def check_top_fraction(top_fraction: Any) -> float:
    """``top_fraction`` as a float in (0, 1], or a clear error."""
    try:
        f = float(top_fraction)
    except (TypeError, ValueError):
        f = float("nan")
    if not 0.0 < f <= 1.0:
        raise ValueError(
            "score_top_fraction must be in (0, 1]: the share of values (of valid steps, for "
            f"sequences), largest errors first, that the score averages (1 = all); got "
            f"{top_fraction!r}"
        )
    return f


def per_sequence_scores(
    step_scores: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    reduction: str = "mean",
    top_fraction: float = 1.0,
) -> np.ndarray:
    """Reduce per-step scores ``[N, T]`` to one score per sequence over its valid steps.

    ``lengths`` (from :func:`pad_sequences`) excludes the padding; ``reduction``
    is ``"mean"`` or ``"max"``. With ``top_fraction`` f < 1 the mean covers only the
    largest :func:`top_step_count` valid steps, so an anomaly a few steps long is not
    diluted by the rest of the sequence (f -> 0 tends to ``"max"``). Float inputs keep
    their dtype (others: float32).
    """
    if reduction not in REDUCTIONS:
        raise DataError(f"unknown reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")
    top_fraction = check_top_fraction(top_fraction)
    if top_fraction < 1.0 and reduction != "mean":
        raise DataError(f"top_fraction applies to reduction 'mean', not {reduction!r}")
    scores = _array(
        "step_scores",
        step_scores,
        (2,),
        "pass one score per step, [N, T] (average per-feature errors first, e.g. err.mean(-1))",
    )
    _check_finite("step_scores", scores)
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float32
    n, steps = scores.shape
    if lengths is None:
        valid = np.ones(scores.shape, dtype=bool)
    else:
        lens = _check_lengths(lengths, n, steps)
        if lens.size and lens.min() == 0:
            raise DataError(
                "a sequence has length 0, so it has no steps to score; drop empty sequences"
            )
        valid = np.arange(steps)[None, :] < lens[:, None]
    if reduction == "max":
        out = np.where(valid, scores, -np.inf).max(axis=1)
    elif top_fraction < 1.0:
        largest_first = -np.sort(-np.where(valid, scores, -np.inf), axis=1)
        count = top_step_count(valid.sum(axis=1), top_fraction)
        taken = np.arange(steps)[None, :] < count[:, None]
        out = np.where(taken, largest_first, 0).sum(axis=1, dtype=np.float64) / count
    else:
        out = np.where(valid, scores, 0).sum(axis=1, dtype=np.float64) / valid.sum(axis=1)
    return out.astype(dtype)


# --------------------------------------------------------------------------- datasets / scaling


def from_series(
    series: np.ndarray | SyntheticSeries, labels: Any = None, *, with_labels: bool = False
) -> tf.data.Dataset:
    """Unbatched dataset of float32 ``[T, F]`` series (or ``(series, int64 label)`` pairs).

    ``series`` is ``[N, T, F]`` (or a :class:`SyntheticSeries`, whose per-series
    ``labels`` are used unless ``labels`` is given). ``labels`` has shape ``[N]``
    (one per series) or ``[N, T]`` (one per step) and is used with ``with_labels=True``.
    """
    if isinstance(series, SyntheticSeries):
        if labels is None:
            labels = series.labels
        series = series.series
    arr = _array(
        "series",
        series,
        (3,),
        "pass [n_series, length, features] (x[None] for one series, x[..., None] for "
        "univariate data)",
    )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"series must be non-empty, got shape {arr.shape}")
    _check_finite("series", arr)
    arr = arr.astype(np.float32)
    if with_labels and labels is None:
        raise DataError("with_labels=True but no labels were given; pass labels= or drop it")
    if not with_labels:
        return tf.data.Dataset.from_tensor_slices(arr)
    lab = np.asarray(labels)
    if lab.shape not in ((arr.shape[0],), arr.shape[:2]):
        raise DataError(
            f"labels have shape {lab.shape} but series are {arr.shape}; pass one label per "
            f"series ({arr.shape[0]},) or per step {arr.shape[:2]}"
        )
    integral = np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_
    if not integral and not (np.issubdtype(lab.dtype, np.floating) and np.all(np.mod(lab, 1) == 0)):
        raise DataError(f"labels must be integers or bools, got dtype {lab.dtype}")
    return tf.data.Dataset.from_tensor_slices((arr, lab.astype(np.int64)))


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[Any, ...]:
    """Scale every array per feature (last axis) with the mean/std of ``train`` only.

    Returns ``(train_scaled, *others_scaled, {"mean": [F], "std": [F]})`` as
    float32. A constant feature has std 0 and is only centred (its std is set to 1).
    """
    names = ["train", *(f"others[{i}]" for i in range(len(others)))]
    arrays = []
    for name, a in zip(names, (train, *others), strict=True):
        hint = "pass [length, features] or [n_series, length, features]"
        arrays.append(_array(name, a, (2, 3), hint))
        _check_finite(name, arrays[-1])
    ref = arrays[0]
    if ref.size == 0:
        raise DataError(f"train is empty (shape {ref.shape}); pass the training series")
    n_feat = ref.shape[-1]
    for i, a in enumerate(arrays[1:]):
        if a.shape[-1] != n_feat:
            raise DataError(
                f"others[{i}] has {a.shape[-1]} features but train has {n_feat}; "
                "standardize arrays with the same features"
            )
    flat = ref.reshape(-1, n_feat).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    scaled = [((a.astype(np.float64) - mean) / std).astype(np.float32) for a in arrays]
    return (*scaled, {"mean": mean.astype(np.float32), "std": std.astype(np.float32)})
