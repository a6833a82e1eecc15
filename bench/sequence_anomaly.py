"""Sequence anomaly detection on the documented synthetic series: the zoo's recurrent
autoencoders beside a plain-Keras LSTM autoencoder and a PCA baseline, same data.

Protocol (every method, every training seed):

- train on ``TRAIN`` normal series of ``zoo.data.synthetic_series`` (the
  ``recurrent_ae_synthetic`` recipe's data: 64 steps, 3 features, seed 0);
- choose the per-sequence score on a validation set (its own generator seed): the mean
  step error, or the mean of the largest share f of the steps
  (``score_top_fraction``, :func:`zoo.data.per_sequence_scores`);
- report AUROC on a test set with a fresh seed, overall and per anomaly kind (each kind's
  series against all the normal ones).

The plain-Keras reference is the same architecture (LSTM encoder, dense code,
repeated code, LSTM decoder, per-step dense) written with ``keras.Sequential`` and
``fit(x, x)``, so a gap between it and ``recurrent_ae`` would point at the zoo's
trainer. PCA: squared error of the projection of the flattened series onto the top-k
principal subspace of the normal training series (k: 90% of the variance), averaged
per step and reduced the same way.

    python -m bench.sequence_anomaly                 # writes bench/reports/sequence_anomaly.md
    python -m bench.sequence_anomaly --seeds 1 --epochs 3 --no-report   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.common import write_report

TRAIN = {"n_series": 512, "seed": 0}
VALIDATION = {"n_series": 600, "anomaly_fraction": 0.5, "seed": 3000}
TEST = {"n_series": 1200, "anomaly_fraction": 0.5, "seed": 4000}
SHAPE = {"length": 64, "n_features": 3}
NETWORK = {"units": 64, "latent_dim": 16}
TRAINING = {"epochs": 30, "batch_size": 32, "learning_rate": 2e-3}
FRACTIONS = (1.0, 0.25, 0.1, 0.05)
PCA_VARIANCE = 0.9
KINDS = ("spike", "level_shift", "pattern_change")


@dataclass
class Data:
    series: np.ndarray  # [N, T, F] float32
    labels: np.ndarray  # [N] bool
    kinds: np.ndarray  # [N] str: "normal" or the anomaly's kind


def make_data(spec: dict) -> Data:
    from zoo import data as zdata

    made = zdata.synthetic_series(**SHAPE, **spec)
    kinds = np.array([k or "normal" for k in made.kinds])
    return Data(made.series, made.labels, kinds)


def aurocs(scores: np.ndarray, data: Data) -> dict[str, float]:
    """AUROC x 100 overall and per kind (that kind's series against the normal ones)."""
    from zoo.metrics.anomaly import auroc

    out = {"all": 100 * auroc(scores, data.labels)}
    for kind in KINDS:
        keep = (data.kinds == "normal") | (data.kinds == kind)
        out[kind] = 100 * auroc(scores[keep], data.labels[keep])
    return out


def sequence_scores(step_errors: np.ndarray, fraction: float) -> np.ndarray:
    from zoo import data as zdata

    return zdata.per_sequence_scores(step_errors, top_fraction=fraction)


# --------------------------------------------------------------------------- methods
# Each method: train(x_train, seed) -> step_errors(x) -> [N, T] per-step squared error.

StepErrors = Callable[[np.ndarray], np.ndarray]


def train_zoo(cell: str) -> Callable[[np.ndarray, int, int], StepErrors]:
    def train(x: np.ndarray, seed: int, epochs: int) -> StepErrors:
        import keras

        import zoo

        keras.utils.set_random_seed(seed)
        model = zoo.load(
            "recurrent_ae", sequence_shape=x.shape[1:], cell=cell, seed=seed, **NETWORK
        )
        model.compile(optimizer=keras.optimizers.Adam(TRAINING["learning_rate"]))
        model.fit(x, epochs=epochs, batch_size=TRAINING["batch_size"], shuffle=True, verbose=0)
        return lambda s: np.asarray(model.step_scores(s), np.float64)

    return train


def train_keras_reference(x: np.ndarray, seed: int, epochs: int) -> StepErrors:
    """The same LSTM autoencoder in plain Keras: Sequential, mse, fit(x, x)."""
    import keras

    keras.utils.set_random_seed(seed)
    steps, features = x.shape[1:]
    model = keras.Sequential(
        [
            keras.Input((steps, features)),
            keras.layers.LSTM(NETWORK["units"]),
            keras.layers.Dense(NETWORK["latent_dim"]),
            keras.layers.RepeatVector(steps),
            keras.layers.LSTM(NETWORK["units"], return_sequences=True),
            keras.layers.TimeDistributed(keras.layers.Dense(features)),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(TRAINING["learning_rate"]), loss="mse")
    model.fit(x, x, epochs=epochs, batch_size=TRAINING["batch_size"], shuffle=True, verbose=0)

    def step_errors(s: np.ndarray) -> np.ndarray:
        rebuilt = model.predict(s, batch_size=256, verbose=0)
        return np.mean((s.astype(np.float64) - rebuilt) ** 2, axis=-1)

    return step_errors


def train_pca(x: np.ndarray, seed: int, epochs: int) -> StepErrors:
    """Projection onto the principal subspace holding ``PCA_VARIANCE`` of the variance
    (deterministic: ``seed`` and ``epochs`` are unused)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, singular, directions = np.linalg.svd(flat - mean, full_matrices=False)
    ratios = np.cumsum(singular**2) / np.sum(singular**2)
    basis = directions[: int(np.searchsorted(ratios, PCA_VARIANCE) + 1)]

    def step_errors(s: np.ndarray) -> np.ndarray:
        centered = s.reshape(len(s), -1).astype(np.float64) - mean
        residual = centered - (centered @ basis.T) @ basis
        return np.mean(residual.reshape(s.shape) ** 2, axis=-1)

    step_errors.components = len(basis)  # type: ignore[attr-defined]
    return step_errors


METHODS: dict[str, tuple[str, Callable[[np.ndarray, int, int], StepErrors]]] = {
    "lstm": ("`recurrent_ae` (LSTM)", train_zoo("lstm")),
    "gru": ("`recurrent_ae` (GRU)", train_zoo("gru")),
    "keras": ("plain-Keras LSTM AE", train_keras_reference),
    "pca": ("PCA", train_pca),
}
DETERMINISTIC = {"pca"}
BASELINE = "pca"


# --------------------------------------------------------------------------- run


@dataclass
class MethodResult:
    seconds: list[float]
    validation: dict[float, list[dict[str, float]]]  # fraction -> one dict per seed
    test: dict[float, list[dict[str, float]]]
    note: str = ""

    def mean(self, split: str, fraction: float, key: str = "all") -> float:
        return float(np.mean([r[key] for r in getattr(self, split)[fraction]]))

    def spread(self, split: str, fraction: float, key: str = "all") -> float:
        values = [r[key] for r in getattr(self, split)[fraction]]
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    @property
    def chosen(self) -> float:
        """The fraction with the best mean validation AUROC (ties: the larger fraction)."""
        return max(FRACTIONS, key=lambda f: (round(self.mean("validation", f), 6), f))


def run(seeds: list[int], epochs: int, methods: list[str]) -> dict[str, MethodResult]:
    train, validation, test = make_data(TRAIN), make_data(VALIDATION), make_data(TEST)
    results = {}
    for name in methods:
        label, train_method = METHODS[name]
        result = MethodResult([], {f: [] for f in FRACTIONS}, {f: [] for f in FRACTIONS})
        for seed in seeds[:1] if name in DETERMINISTIC else seeds:
            start = time.perf_counter()
            step_errors = train_method(train.series, seed, epochs)
            result.seconds.append(time.perf_counter() - start)
            errors = {
                "validation": step_errors(validation.series),
                "test": step_errors(test.series),
            }
            for split, data in (("validation", validation), ("test", test)):
                for f in FRACTIONS:
                    getattr(result, split)[f].append(
                        aurocs(sequence_scores(errors[split], f), data)
                    )
            if hasattr(step_errors, "components"):
                result.note = f"k = {step_errors.components} components"
            print(
                f"{label} seed {seed}: {result.seconds[-1]:.0f} s; validation AUROC "
                + ", ".join(f"f={f:g}: {result.validation[f][-1]['all']:.1f}" for f in FRACTIONS),
                flush=True,
            )
        results[name] = result
    return results


def fraction_label(f: float) -> str:
    return "mean of all steps" if f >= 1.0 else f"top {f:g}"


def cell(result: MethodResult, split: str, f: float, key: str = "all") -> str:
    text = f"{result.mean(split, f, key):.1f}"
    return text + (f" ± {result.spread(split, f, key):.1f}" if len(result.test[f]) > 1 else "")


def report_body(results: dict[str, MethodResult], seeds: list[int], epochs: int) -> str:
    n_seeds = len(seeds)
    lines = [
        "Protocol: train on "
        f"{TRAIN['n_series']} normal series of `zoo.data.synthetic_series` (64 steps, 3 "
        f"features, seed {TRAIN['seed']}: the `recurrent_ae_synthetic` recipe's data); "
        f"choose the per-sequence score on a validation set ({VALIDATION['n_series']} series, "
        f"half with one injected anomaly, seed {VALIDATION['seed']}); report AUROC x 100 on a "
        f"test set ({TEST['n_series']} series, half anomalous, seed {TEST['seed']}, never used "
        "to choose). Per-kind columns: the series with that kind of anomaly against all the "
        "normal ones. Scores: per-step squared error (mean over features), reduced per "
        "series to the mean of all steps or of the largest share f of the steps "
        "(`score_top_fraction`; `zoo.data.per_sequence_scores`). Networks: "
        f"{NETWORK['units']} units, code {NETWORK['latent_dim']}, Adam "
        f"{TRAINING['learning_rate']:g}, batch {TRAINING['batch_size']}, {epochs} epochs; "
        f"neural rows are mean ± sd over {n_seeds} training seeds ({', '.join(map(str, seeds))}"
        "). PCA: 90% of the variance of the flattened normal training series.",
        "",
        "## Test AUROC at the score chosen on validation",
        "",
        "| method | score (chosen on validation) | all | spike | level shift | pattern change "
        "| train time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        f = r.chosen
        kinds = " | ".join(cell(r, "test", f, k) for k in KINDS)
        lines.append(
            f"| {METHODS[name][0]} | {fraction_label(f)} | {cell(r, 'test', f)} | {kinds} | "
            f"{np.mean(r.seconds):.0f} |"
        )
    neural = [n for n in results if n != BASELINE]
    if neural:
        best = max(neural, key=lambda n: results[n].mean("validation", results[n].chosen))
        lines += ["", summary(METHODS[best][0], results[best], results.get(BASELINE))]
    lines.append("")
    for split, title in (("validation", "Validation"), ("test", "Test")):
        lines += [
            f"## {title} AUROC (all anomalies) for every score",
            "",
            "| method | " + " | ".join(fraction_label(f) for f in FRACTIONS) + " |",
            "|---|" + "---:|" * len(FRACTIONS),
        ]
        for name, r in results.items():
            lines.append(
                f"| {METHODS[name][0]} | " + " | ".join(cell(r, split, f) for f in FRACTIONS) + " |"
            )
        lines.append("")
    lines += [
        "## Test AUROC per kind for every score",
        "",
        "| method | score | spike | level shift | pattern change |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        for f in FRACTIONS:
            kinds = " | ".join(cell(r, "test", f, k) for k in KINDS)
            lines.append(f"| {METHODS[name][0]} | {fraction_label(f)} | {kinds} |")
    notes = [f"{METHODS[n][0]}: {r.note}" for n, r in results.items() if r.note]
    lines += ["", "Notes: " + "; ".join(notes) + "." if notes else ""]
    lines += [
        "",
        "What this does and does not say: the series are synthetic (a shared slow sinusoid "
        "plus per-feature faster ones and noise; see `zoo.data.timeseries`), so these "
        "figures check that the detectors find the kinds of anomaly they should and compare "
        "methods on equal terms; they say nothing about real data.",
    ]
    return "\n".join(lines)


def summary(best: str, r: MethodResult, pca: MethodResult | None) -> str:
    f = r.chosen
    text = (
        f"Best neural method on validation: {best} with the {fraction_label(f)} score, test "
        f"AUROC {r.mean('test', f):.1f}"
    )
    if pca is None:
        return text + "."
    g = pca.chosen
    diff = r.mean("test", f) - pca.mean("test", g)
    kinds = [k for k in KINDS if r.mean("test", f, k) > pca.mean("test", g, k)]
    return (
        f"{text} against PCA's {pca.mean('test', g):.1f} ({fraction_label(g)}): "
        f"{diff:+.1f} points; higher on {len(kinds)} of {len(KINDS)} kinds"
        f"{' (' + ', '.join(kinds) + ')' if kinds else ''}."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=TRAINING["epochs"])
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
        help="which methods to run (default: all)",
    )  # fmt: skip
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        parser.error("--seeds and --epochs must be at least 1")
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    results = run(seeds, args.epochs, args.methods)
    body = report_body(results, seeds, args.epochs)
    body += f"\n\nTotal time {time.perf_counter() - start:.0f} s."
    print(body)
    if not args.no_report:
        command = " ".join(
            ["python -m bench.sequence_anomaly", *(argv if argv is not None else sys.argv[1:])]
        )
        path = write_report("sequence_anomaly", "Sequence anomaly detection", body, command)
        print(f"report: {path}")


if __name__ == "__main__":
    main()
