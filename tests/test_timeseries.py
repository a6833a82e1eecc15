"""Tests for zoo.data.timeseries: the synthetic anomaly generator and the windowing helpers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.data import (
    ANOMALY_KINDS,
    DataError,
    SyntheticSeries,
    from_series,
    pad_sequences,
    per_sequence_scores,
    sequence_mask,
    sliding_windows,
    standardize,
    synthetic_series,
    top_step_count,
    window_labels,
)


@pytest.fixture(scope="module")
def data() -> SyntheticSeries:
    return synthetic_series()


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    """The same series as ``data`` without anomalies."""
    return synthetic_series(anomaly_fraction=0.0).series


def _indices(d: SyntheticSeries, kind: str) -> list[int]:
    found = [i for i, k in enumerate(d.kinds) if k == kind]
    assert found, f"no {kind} anomalies in the fixture"
    return found


# --------------------------------------------------------------------------- generator


def test_shapes_dtypes_and_normal_range(data: SyntheticSeries, clean: np.ndarray) -> None:
    assert data.series.shape == (200, 128, 3) and data.series.dtype == np.float32
    assert data.point_labels.shape == (200, 128) and data.point_labels.dtype == np.bool_
    assert data.labels.shape == (200,) and data.labels.dtype == np.bool_
    assert len(data.kinds) == len(data.spans) == 200
    assert np.abs(clean).max() <= 1.5
    stds = clean.std(axis=1)
    assert stds.min() > 0.15 and stds.max() < 0.8  # periodic signal, not noise or constants
    small = synthetic_series(4, 40, 2, noise=0.0, seed=1)
    assert small.series.shape == (4, 40, 2) and small.point_labels.shape == (4, 40)


def test_deterministic_per_seed_and_seeds_differ(data: SyntheticSeries) -> None:
    again = synthetic_series()
    np.testing.assert_array_equal(again.series, data.series)
    np.testing.assert_array_equal(again.point_labels, data.point_labels)
    assert again.kinds == data.kinds and again.spans == data.spans
    other = synthetic_series(seed=1)
    assert not np.allclose(other.series, data.series)
    assert other.spans != data.spans


def test_features_share_a_latent_component(clean: np.ndarray) -> None:
    within = np.mean([abs(np.corrcoef(x.T)[0, 1]) for x in clean])
    across = np.mean(
        [abs(np.corrcoef(clean[i, :, 0], clean[i - 1, :, 1])[0, 1]) for i in range(200)]
    )
    assert within > 1.5 * across


@pytest.mark.parametrize(("n", "fraction"), [(200, 0.2), (50, 0.33), (7, 1.0), (30, 0.0)])
def test_anomaly_count_is_rounded_fraction(n: int, fraction: float) -> None:
    d = synthetic_series(n, 64, 2, anomaly_fraction=fraction, seed=3)
    expected = round(fraction * n)
    assert d.labels.sum() == expected
    assert sum(k is not None for k in d.kinds) == expected
    assert sum(s is not None for s in d.spans) == expected
    np.testing.assert_array_equal(d.labels, d.point_labels.any(axis=1))


def test_kinds_are_spread_evenly(data: SyntheticSeries) -> None:
    counts = [data.kinds.count(k) for k in ANOMALY_KINDS]
    assert sum(counts) == 40 and max(counts) - min(counts) <= 1
    two = synthetic_series(100, anomaly_fraction=0.5, kinds=("spike", "pattern_change"))
    assert two.kinds.count("spike") == two.kinds.count("pattern_change") == 25
    only = synthetic_series(20, anomaly_fraction=0.5, kinds="level_shift")
    assert {k for k in only.kinds if k is not None} == {"level_shift"}


def test_point_labels_mark_exactly_the_changed_steps(
    data: SyntheticSeries, clean: np.ndarray
) -> None:
    for i, span in enumerate(data.spans):
        expected = np.zeros(128, dtype=bool)
        if span is None:
            assert data.kinds[i] is None and not data.labels[i]
        else:
            start, end = span
            assert 0 <= start < end <= 128
            expected[start:end] = True
        np.testing.assert_array_equal(data.point_labels[i], expected)
    # the anomalies change the series exactly where labelled; elsewhere it equals the clean one
    changed = np.any(data.series != clean, axis=-1)
    np.testing.assert_array_equal(changed, data.point_labels)
    assert not data.point_labels[~data.labels].any()


def test_spike_steps_are_extreme_for_their_series(data: SyntheticSeries) -> None:
    for i in _indices(data, "spike"):
        start, end = data.spans[i]
        assert 1 <= end - start <= 3
        x, normal = data.series[i], ~data.point_labels[i]
        z = np.abs((x - x[normal].mean(axis=0)) / x[normal].std(axis=0))
        assert (z[start:end].max(axis=1) > 3).all()
        assert z[normal].max() < 3


def test_level_shift_adds_a_constant_offset_of_at_least_one_std(
    data: SyntheticSeries, clean: np.ndarray
) -> None:
    for i in _indices(data, "level_shift"):
        start, end = data.spans[i]
        assert end - start >= 20
        delta = data.series[i, start:end] - clean[i, start:end]
        np.testing.assert_allclose(delta, delta[:1].repeat(len(delta), 0), atol=1e-5)
        shift = np.abs(delta.mean(axis=0)) / clean[i].std(axis=0)
        # span mean vs the same steps without the anomaly: >= 1 std on the shifted features
        assert shift.max() >= 1.0 - 1e-4 and shift.max() <= 2.0 + 1e-4
        assert set(np.flatnonzero(shift > 0)) == set(np.flatnonzero(shift >= 1.0 - 1e-4))


def _zero_crossings(x: np.ndarray) -> np.ndarray:
    return (np.diff(np.sign(x - x.mean(axis=0)), axis=0) != 0).sum(axis=0)


def test_pattern_change_is_faster_at_the_same_amplitude() -> None:
    # noise=0 isolates the periodic pattern; the normal signal is the same as with noise
    d = synthetic_series(anomaly_fraction=0.5, kinds="pattern_change", noise=0.0)
    base = synthetic_series(anomaly_fraction=0.0, noise=0.0).series
    faster = []
    for i in _indices(d, "pattern_change"):
        start, end = d.spans[i]
        assert end - start >= 20
        span, before = d.series[i, start:end], base[i, start:end]
        # every feature changes faster (RMS step-to-step change) ...
        speed = np.sqrt(
            (np.diff(span, axis=0) ** 2).mean(0) / (np.diff(before, axis=0) ** 2).mean(0)
        )
        assert (speed > 1.5).all()
        # ... crosses its mean more often, and stays within the normal value range
        faster.extend(_zero_crossings(span) > _zero_crossings(before))
        assert np.abs(span).max() <= 1.5
    assert np.mean(faster) >= 0.9
    # the dominant FFT frequency over the whole anomalous window is higher on average
    peaks = []
    for i in _indices(d, "pattern_change"):
        start, end = d.spans[i]
        spec = np.abs(np.fft.rfft(d.series[i, start:end] - d.series[i, start:end].mean(0), 512, 0))
        ref = np.abs(np.fft.rfft(base[i, start:end] - base[i, start:end].mean(0), 512, 0))
        peaks.append(spec.argmax(0).mean() / max(ref.argmax(0).mean(), 1))
    assert np.median(peaks) > 2


def test_generator_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="length must be an integer >= 32"):
        synthetic_series(length=31)
    for fraction in (-0.1, 1.5, float("nan")):
        with pytest.raises(DataError, match="anomaly_fraction must be in"):
            synthetic_series(anomaly_fraction=fraction)
    with pytest.raises(DataError) as err:
        synthetic_series(kinds=("spike", "drift"))
    assert "drift" in str(err.value) and all(k in str(err.value) for k in ANOMALY_KINDS)
    with pytest.raises(DataError, match="kinds is empty"):
        synthetic_series(kinds=())
    with pytest.raises(DataError, match="duplicates"):
        synthetic_series(kinds=("spike", "spike"))
    with pytest.raises(DataError, match="n_series"):
        synthetic_series(n_series=0)
    with pytest.raises(DataError, match="n_features"):
        synthetic_series(n_features=0)
    with pytest.raises(DataError, match="noise"):
        synthetic_series(noise=-0.1)
    with pytest.raises(DataError, match="seed"):
        synthetic_series(seed=-1)


# --------------------------------------------------------------------------- windows


def test_sliding_windows_values_and_counts() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    w = sliding_windows(x, 4, stride=3)
    assert w.shape == (3, 4, 1) and w.dtype == np.float32
    np.testing.assert_array_equal(w[..., 0], [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert sliding_windows(x, 4).shape == (7, 4, 1)
    assert sliding_windows(x, 10).shape == (1, 10, 1)
    assert sliding_windows(x, 3, stride=4).shape == (2, 3, 1)  # starts 0, 4 (8 + 3 > 10)
    assert sliding_windows(x, 2, stride=4).shape == (3, 2, 1)  # starts 0, 4, 8
    # batched: windows of series 0, then series 1; features stay together
    batch = np.stack([np.stack([np.arange(6), -np.arange(6)], -1), 100 + np.zeros((6, 2))])
    wb = sliding_windows(batch, 3, stride=2)
    assert wb.shape == (4, 3, 2)
    np.testing.assert_array_equal(wb[1], [[2, -2], [3, -3], [4, -4]])
    np.testing.assert_array_equal(wb[2:], 100)
    w[0, 0, 0] = 99  # a copy, not a view
    assert x[0, 0] == 0


def test_sliding_windows_errors() -> None:
    x = np.zeros((10, 2))
    with pytest.raises(DataError, match="longer than the series"):
        sliding_windows(x, 11)
    with pytest.raises(DataError, match="size"):
        sliding_windows(x, 0)
    with pytest.raises(DataError, match="stride"):
        sliding_windows(x, 3, stride=0)
    with pytest.raises(DataError, match=r"x\[\.\.\., None\]"):
        sliding_windows(np.zeros(10), 3)


def test_window_labels_any_and_majority() -> None:
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    # windows of 4, stride 3: steps 0-3 (2 anomalous), 3-6 (2), 6-9 (1)
    np.testing.assert_array_equal(window_labels(labels, 4, 3), [True, True, True])
    np.testing.assert_array_equal(window_labels(labels, 4, 3, rule="majority"), [0, 0, 0])
    np.testing.assert_array_equal(
        window_labels(labels, 3, 1, rule="majority"), [0, 1, 1, 1, 0, 0, 0, 0]
    )
    np.testing.assert_array_equal(window_labels(labels, 3, 1), [1, 1, 1, 1, 1, 0, 0, 1])
    with pytest.raises(DataError, match="any, majority"):
        window_labels(labels, 3, rule="all")


def test_window_labels_match_sliding_windows_of_synthetic_data(data: SyntheticSeries) -> None:
    windows = sliding_windows(data.series[:20], 32, stride=16)
    labels = window_labels(data.point_labels[:20], 32, stride=16)
    assert windows.shape == (20 * 7, 32, 3) and labels.shape == (20 * 7,)
    for j, start in enumerate(range(0, 128 - 32 + 1, 16)):
        for i in range(20):
            np.testing.assert_array_equal(windows[i * 7 + j], data.series[i, start : start + 32])
            span = data.spans[i]
            overlaps = span is not None and span[0] < start + 32 and start < span[1]
            assert labels[i * 7 + j] == overlaps


# --------------------------------------------------------------------------- padding


def test_pad_sequences_round_trip_lengths_and_mask() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(t, 2)) for t in (5, 3, 7)]
    padded, lengths = pad_sequences(seqs, value=-1.0)
    assert padded.shape == (3, 7, 2) and padded.dtype == np.float32
    assert lengths.dtype == np.int32 and lengths.tolist() == [5, 3, 7]
    for seq, row, n in zip(seqs, padded, lengths, strict=True):
        np.testing.assert_allclose(row[:n], seq, rtol=1e-6)
        assert (row[n:] == -1.0).all()
    mask = sequence_mask(lengths, 7)
    assert mask.dtype == np.bool_ and mask.shape == (3, 7)
    np.testing.assert_array_equal(mask.sum(1), lengths)
    restored = [row[m] for row, m in zip(padded, mask, strict=True)]
    for seq, back in zip(seqs, restored, strict=True):
        np.testing.assert_allclose(back, seq, rtol=1e-6)


def test_pad_sequences_truncation() -> None:
    seq = np.arange(6, dtype=np.float32)[:, None]
    post, n_post = pad_sequences([seq, seq[:2]], maxlen=4)
    np.testing.assert_array_equal(post[..., 0], [[0, 1, 2, 3], [0, 1, 0, 0]])
    assert n_post.tolist() == [4, 2]
    pre, n_pre = pad_sequences([seq, seq[:2]], maxlen=4, truncate="pre")
    np.testing.assert_array_equal(pre[..., 0], [[2, 3, 4, 5], [0, 1, 0, 0]])
    assert n_pre.tolist() == [4, 2]


def test_pad_sequences_and_mask_errors() -> None:
    with pytest.raises(DataError, match="empty"):
        pad_sequences([])
    with pytest.raises(DataError, match="different feature counts"):
        pad_sequences([np.zeros((3, 2)), np.zeros((3, 1))])
    with pytest.raises(DataError, match=r"s\[:, None\]"):
        pad_sequences([np.zeros(3)])
    with pytest.raises(DataError, match="truncate"):
        pad_sequences([np.zeros((3, 1))], truncate="middle")
    with pytest.raises(DataError, match="NaN"):
        pad_sequences([np.full((3, 1), np.nan)])
    np.testing.assert_array_equal(sequence_mask(np.array([0, 2]), 3), [[0, 0, 0], [1, 1, 0]])
    with pytest.raises(DataError, match=r"lengths must be in \[0, 3\]"):
        sequence_mask(np.array([4]), 3)
    with pytest.raises(DataError, match=r"lengths must be in"):
        sequence_mask(np.array([-1]), 3)


def test_per_sequence_scores_ignore_padding() -> None:
    scores = np.array([[1.0, 3.0, 1000.0, 1000.0], [2.0, 4.0, 6.0, -1000.0]], dtype=np.float32)
    lengths = np.array([2, 3], dtype=np.int32)
    mean = per_sequence_scores(scores, lengths)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(per_sequence_scores(scores, lengths, reduction="max"), [3.0, 6.0])
    np.testing.assert_allclose(per_sequence_scores(scores), scores.mean(1))
    high = np.array([[-5.0, -7.0, 50.0]])  # max over valid steps even when they are negative
    np.testing.assert_allclose(per_sequence_scores(high, np.array([2]), reduction="max"), [-5.0])
    with pytest.raises(DataError, match="mean, max"):
        per_sequence_scores(scores, reduction="median")
    with pytest.raises(DataError, match="length 0"):
        per_sequence_scores(scores, np.array([0, 2]))
    with pytest.raises(DataError, match="2 lengths for 1 sequences"):
        per_sequence_scores(high, np.array([1, 1]))
    with pytest.raises(DataError, match=r"err.mean\(-1\)"):
        per_sequence_scores(np.zeros((2, 4, 3)))


def test_per_sequence_top_fraction_averages_the_largest_valid_steps() -> None:
    scores = np.array([[1.0, 5.0, 3.0, 900.0], [4.0, 2.0, 8.0, 6.0]], dtype=np.float32)
    lengths = np.array([3, 4])
    # k = max(1, floor(f * valid + 0.5)): f = 0.5 -> 2 of 3 steps (1.5 rounds up), 2 of 4
    np.testing.assert_allclose(per_sequence_scores(scores, lengths, top_fraction=0.5), [4.0, 7.0])
    np.testing.assert_array_equal(top_step_count(np.array([3, 4, 1, 64]), 0.5), [2, 2, 1, 32])
    np.testing.assert_array_equal(top_step_count(np.array([64, 1]), 0.01), [1, 1])
    # a tiny fraction is the max; the whole fraction is the mean
    np.testing.assert_allclose(
        per_sequence_scores(scores, lengths, top_fraction=0.01),
        per_sequence_scores(scores, lengths, reduction="max"),
    )
    np.testing.assert_allclose(
        per_sequence_scores(scores, lengths, top_fraction=1.0), per_sequence_scores(scores, lengths)
    )
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        per_sequence_scores(scores, top_fraction=0.0)
    with pytest.raises(DataError, match="applies to reduction 'mean'"):
        per_sequence_scores(scores, reduction="max", top_fraction=0.5)


# --------------------------------------------------------------------------- datasets / scaling


def test_from_series_elements_and_labels(data: SyntheticSeries) -> None:
    ds = from_series(data.series[:5].astype(np.float64))
    assert ds.element_spec == tf.TensorSpec((128, 3), tf.float32)
    got = np.stack([x.numpy() for x in ds])
    np.testing.assert_array_equal(got, data.series[:5])
    pairs = from_series(data.series, data.labels, with_labels=True)
    assert pairs.element_spec[1] == tf.TensorSpec((), tf.int64)
    assert int(sum(int(y) for _, y in pairs)) == int(data.labels.sum())
    from_obj = from_series(data, with_labels=True)  # SyntheticSeries carries its labels
    assert [int(y) for _, y in from_obj.take(200)] == data.labels.astype(int).tolist()
    per_step = from_series(data.series, data.point_labels, with_labels=True)
    assert per_step.element_spec[1] == tf.TensorSpec((128,), tf.int64)
    assert len(list(from_series(data.series).batch(64))) == 4


def test_from_series_errors() -> None:
    x = np.zeros((4, 32, 2), dtype=np.float32)
    with pytest.raises(DataError, match="no labels"):
        from_series(x, with_labels=True)
    with pytest.raises(DataError, match=r"x\[None\]"):
        from_series(x[0])
    with pytest.raises(DataError, match="labels have shape"):
        from_series(x, np.zeros(3), with_labels=True)
    with pytest.raises(DataError, match="NaN"):
        from_series(np.full((1, 3, 1), np.nan))


def test_standardize_uses_train_statistics_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal([1.0, -2.0, 5.0], [2.0, 0.5, 1.0], size=(40, 64, 3))
    test = rng.normal([3.0, 0.0, 5.0], [1.0, 1.0, 3.0], size=(10, 64, 3))
    train_s, test_s, stats = standardize(train, test)
    assert train_s.dtype == test_s.dtype == np.float32
    np.testing.assert_allclose(train_s.reshape(-1, 3).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train_s.reshape(-1, 3).std(0), 1.0, atol=1e-5)
    mean, std = train.reshape(-1, 3).mean(0), train.reshape(-1, 3).std(0)
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(stats["std"], std, rtol=1e-6)
    np.testing.assert_allclose(test_s, (test - mean) / std, rtol=1e-5, atol=1e-5)
    assert abs(test_s[..., 0].mean()) > 0.5  # the test set's own mean was not used
    # 2-d inputs, several others, and a constant feature (centred, not divided by 0)
    flat = np.stack([np.arange(8.0), np.full(8, 3.0)], -1)
    a, b, c, s = standardize(flat, flat + 1, flat[:2])
    assert s["std"][1] == 1.0 and (a[:, 1] == 0).all() and (b[:, 1] == 1).all()
    assert c.shape == (2, 2)


def test_standardize_errors() -> None:
    with pytest.raises(DataError, match="others\\[0\\] has 2 features but train has 3"):
        standardize(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(DataError, match="train must be"):
        standardize(np.zeros(4))
    with pytest.raises(DataError, match="NaN"):
        standardize(np.array([[np.nan, 1.0]]))
