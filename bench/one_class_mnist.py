"""One-class anomaly detection on the bundled 5,000-digit MNIST sample.

The one-class protocol (Ruff et al., 2018): for each digit d, the normal class is d.
Every class is split 70/30 (stratified, fixed seed). Each model trains on the 70% of
digit d only (350 images) and is tested on the 30% of d (150 normal) plus the 30% of
every other digit (1,350 anomalies), beside a PCA reconstruction-error baseline on the
same split; the metric is AUROC. A model's score is its config's ``scoring``: by default
the zoo's own ``anomaly_score`` (``bench.one_class_scores.zoo_scores``: what
``anomaly_scores`` and the exported ``score`` signature compute); ``blur:<s>`` and
``top<f>:<s>`` are the same code with ``score_blur`` / ``score_top_fraction`` set;
``members`` > 1 adds a seed-ensemble column. The report (``bench.one_class_report``)
then runs the best model by mean and PCA, unchanged, on ``REPEATED_SPLITS`` - 1 further
70/30 splits and judges the target (best autoencoder above PCA on the mean and on most
digits) on the per-digit average over all of them.

Configs are chosen once for all digits (``model_configs()``: the autoencoders' come from
their recipes, ``RECIPES``). ``--protocol validation`` never touches the 30% test split:
of digit d's 350 training images it fits on 280 and holds out 70 as normal validation;
the anomalies are ``VALIDATION["anomalies_per_digit"]`` images of each other digit's
70% training split, and every candidate score is logged (``--save`` keeps the arrays).
How the configs were chosen: bench/reports/one_class_mnist_notes.md.

    python -m bench.one_class_mnist [--digits 0,1,...] [--models conv_ae,...]
        [--epochs-scale 1.0] [--quick] [--protocol test|validation] [--set conv_ae.latent_dim=16]
        [--save bench/out/scores.npz] [--repeats 5] [--split-seed 0] [--extra-scores]
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench.common import pca_components, pca_fit, recipe_settings, write_report
from bench.one_class_report import (
    SplitRun,
    best_column,
    fmt,
    mean_of,
    report_body,
    results_table,
)
from bench.one_class_scores import (
    PCA,
    candidate_names,
    member_scores,
    pca_candidate_rows,
    pca_rows,
    pca_scores,
)

#: The bundled recipe each model's config comes from: the recipes carry the settings
#: chosen here (see the lab notes), so ``zoo train <recipe> --set "data.classes=[d]"``
#: trains what this benchmark measures. Keys in ``BENCH_KEYS`` (training and scoring) are
#: read here; everything else goes to ``zoo.load``.
RECIPES: dict[str, str] = {
    "conv_ae": "conv_ae_mnist",
    "memory_ae": "memory_ae_mnist",
    "denoising_ae": "denoising_ae_mnist",
    "sparse_ae": "sparse_ae_mnist",
    "contractive_ae": "contractive_ae_mnist",
}
#: Models no recipe trains for one-class detection (``vae_mnist`` is the likelihood
#: benchmark's generative VAE: dynamically binarised, smaller): their configs live here.
BENCH_ONLY: dict[str, dict[str, object]] = {
    "vae": {
        "latent_dim": 16,
        "filters": (32, 64),
        "likelihood": "bernoulli",
        "binarize": False,
        "epochs": 30,
        "batch_size": 32,
        "learning_rate": 1e-3,
    },
    # AnoDDPM (zoo.diffusion.anomaly): a small U-Net on the default 1000-step linear
    # schedule; scored at t* = scoring's t:<t*> with the model's 10 DDIM steps back. t* = 499
    # (0.5 T): the best mean validation AUROC on digits 0 and 8 (lab notes, Diffusion score)
    "ddpm": {
        "widths": (16, 32, 32),
        "attention_resolutions": (7,),
        "epochs": 100,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "scoring": "t:499",
    },
}


#: Run only when named in ``--models``: ``ddpm`` trains for about 13 minutes per digit on two
#: shared cores (``conv_ae``: about 25 s), which would make the default ten-digit run hours long.
OPT_IN = ("ddpm",)


def model_configs() -> dict[str, dict[str, object]]:
    """One config per model, used for every digit: each recipe's settings
    (``bench.common.recipe_settings``), then the benchmark-only ones."""
    return {
        **{model: recipe_settings(recipe) for model, recipe in RECIPES.items()},
        **copy.deepcopy(BENCH_ONLY),
    }


#: Keys read by this script, never passed to ``zoo.load``: training (``epochs``,
#: ``batch_size``, ``learning_rate``, optional Adam ``weight_decay``), ``members`` (train
#: that many networks with seeds SEED, SEED + 1, ...; the model's column is member 0 and a
#: column ``<model> x<members>`` averages all of them, see ``ensemble``) and ``scoring``
#: (``model`` = the zoo's ``anomaly_score``, or ``blur:<sigma>``, ``top<f>:<sigma>``, or a
#: candidate such as ``pixvar:<eps>``: ``bench.one_class_scores``). ``augment_shift``:
#: train on randomly shifted copies of the normal images (``random_shifts``), fresh each
#: epoch.
BENCH_KEYS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "augment_shift", "members", "scoring"
)  # fmt: skip
SPLIT = {"test_fraction": 0.3, "seed": 0}  # zoo.data.load_sample: stratified per class
VALIDATION = {"fraction": 0.2, "anomalies_per_digit": 70, "seed": 1}
SEED = 0
#: Repeated 70/30 splits (split seeds SPLIT["seed"], +1, ...): the best model by mean on
#: the report's split and PCA are run again, unchanged, on each; the per-digit half of the
#: target is judged on the average over these splits (``repeated_splits_section``).
REPEATED_SPLITS = 5
QUICK = {"digits": (0, 8), "epochs_scale": 0.2}


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- data


def load_split(seed: int = SPLIT["seed"]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels), float32 in [0, 1]; ``seed``
    picks the stratified 70/30 split (the report's split is ``SPLIT["seed"]``)."""
    from zoo.data import load_sample

    split = {**SPLIT, "seed": seed}
    x_train, y_train = load_sample("train", **split)
    x_test, y_test = load_sample("test", **split)
    return (
        x_train.astype(np.float32) / 255.0,
        y_train,
        x_test.astype(np.float32) / 255.0,
        y_test,
    )


def protocol_data(
    protocol: str, digit: int, data: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normal training images, evaluation images, evaluation labels: 1 = anomaly)."""
    x_train, y_train, x_test, y_test = data
    if protocol == "test":
        return x_train[y_train == digit], x_test, (y_test != digit).astype(np.int64)
    rng = np.random.default_rng(VALIDATION["seed"] + digit)
    normal = rng.permutation(np.flatnonzero(y_train == digit))
    n_val = round(VALIDATION["fraction"] * normal.size)
    fit_idx, val_idx = normal[n_val:], normal[:n_val]
    anomalies = [
        rng.permutation(np.flatnonzero(y_train == other))[: VALIDATION["anomalies_per_digit"]]
        for other in range(10)
        if other != digit
    ]
    eval_idx = np.concatenate([val_idx, *anomalies])
    labels = np.concatenate([np.zeros(val_idx.size), np.ones(eval_idx.size - val_idx.size)])
    return x_train[fit_idx], x_train[eval_idx], labels.astype(np.int64)


# --------------------------------------------------------------------------- models


def random_shifts(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image translated by its own random integer offset in [-max_shift, max_shift]
    along both axes, zero-filled (training augmentation)."""
    height, width = images.shape[1:3]
    pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift)) + ((0, 0),) * (images.ndim - 3)
    padded = np.pad(images, pad)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(len(images), 2))
    return np.stack(
        [padded[i, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)]
    )


def fit_member(
    name: str, config: dict[str, object], x_fit: np.ndarray, scale: float, member: int
) -> Any:
    """One network of model ``name`` built from ``config`` and trained on the normal images
    (seed ``SEED + member`` for weights and shuffling; epochs scaled by ``scale``)."""
    import keras

    import zoo

    seed = SEED + member
    keras.utils.set_random_seed(seed)
    build = {key: value for key, value in config.items() if key not in BENCH_KEYS}
    model = zoo.load(name, **build, seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(
            config["learning_rate"], weight_decay=config.get("weight_decay")
        )
    )
    epochs = max(1, round(config["epochs"] * scale))
    shift = config.get("augment_shift", 0)
    if shift:  # freshly shifted copies of the normal images every epoch
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            images = random_shifts(x_fit, shift, rng)
            model.fit(images, batch_size=config["batch_size"], epochs=1, verbose=0, shuffle=True)
    else:
        model.fit(x_fit, batch_size=config["batch_size"], epochs=epochs, verbose=0, shuffle=True)
    return model


def train_member(
    name: str,
    config: dict[str, object],
    data: tuple[np.ndarray, np.ndarray],
    scale: float,
    member: int,
    candidates: bool = False,
    extra: bool = False,
) -> dict[str, tuple]:
    """``fit_member`` on ``data`` = (normal training images, evaluation images), then its
    ``member_scores``: the config's ``scoring``, and with ``candidates`` every candidate
    score (``candidate_names``; with ``extra``, the round-4 ones too)."""
    import keras

    model = fit_member(name, config, data[0], scale, member)
    scoring = str(config.get("scoring", "model"))
    names = candidate_names(model, extra) if candidates else []
    names += [] if scoring in names else [scoring]
    scores = member_scores(model, *data, names)
    keras.backend.clear_session()
    return scores


def ensemble(members: list[dict[str, tuple]], scoring: str) -> np.ndarray:
    """Mean over members of each member's evaluation scores divided by the median of its
    scores on the normal training images (so no member dominates by scale)."""
    return np.mean([m[scoring][1] / np.median(m[scoring][0]) for m in members], axis=0)


def parse_overrides(items: list[str], configs: dict[str, dict[str, object]]) -> list[str]:
    applied = []
    for item in items:
        key, _, raw = item.partition("=")
        name, _, field = key.partition(".")
        if name not in configs or not field or not raw:
            raise SystemExit(f"--set wants model.key=value with model in {', '.join(configs)}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string such as gaussian
        configs[name][field] = value
        applied.append(f"{name}.{field}={value!r}")
    return applied


# --------------------------------------------------------------------------- protocol


def run_split(
    split_seed: int,
    protocol: str,
    digits: list[int],
    models: list[str],
    configs: dict[str, dict[str, object]],
    scale: float,
    extra_scores: bool = False,
    started: float | None = None,
) -> SplitRun:
    """The one-class protocol on one 70/30 split: per digit, PCA (and its sensitivity
    rows) and each model trained on the normal images and scored on the evaluation set."""
    from zoo.metrics.anomaly import auroc

    started = time.perf_counter() if started is None else started
    data = load_split(split_seed)
    run = SplitRun(seed=split_seed, n_eval=0, seconds={name: 0.0 for name in models})
    rows = pca_rows({name: configs[name] for name in models})
    run.sweep = {label: {} for label in rows}
    for digit in digits:
        x_fit, x_eval, labels = protocol_data(protocol, digit, data)
        run.n_eval = len(labels)
        fit = pca_fit(x_fit)
        run.ks[digit] = pca_components(fit[2], PCA["variance"])
        run.kept["PCA"][digit] = pca_scores(fit, x_eval, run.ks[digit])
        run.kept["labels"][digit] = labels
        run.aurocs["PCA"][digit] = auroc(run.kept["PCA"][digit], labels)
        for label, (rule, score) in rows.items():
            scores = pca_scores(fit, x_eval, pca_components(fit[2], rule), score)
            run.sweep[label][digit] = auroc(scores, labels)
        if extra_scores:  # PCA with the round-4 candidate scores
            for label, scores in pca_candidate_rows(fit, x_eval).items():
                run.sweep.setdefault(label, {})[digit] = auroc(scores, labels)
        log(
            f"[{time.perf_counter() - started:6.0f}s] split {split_seed}, digit {digit}: fit "
            f"{len(x_fit)}, eval {len(labels)} ({labels.sum()} anomalies); PCA "
            f"k={run.ks[digit]} AUROC {fmt(run.aurocs['PCA'][digit])}"
        )
        for name in models:
            began = time.perf_counter()
            config = configs[name]
            members = [
                train_member(
                    name, config, (x_fit, x_eval), scale, m, protocol == "validation", extra_scores
                )
                for m in range(config.get("members", 1))
            ]
            run.seconds[name] += time.perf_counter() - began
            scoring = config.get("scoring", "model")
            columns = {name: members[0][scoring][1]}
            if len(members) > 1:
                columns[f"{name} x{len(members)}"] = ensemble(members, scoring)
            for column, scores in columns.items():
                run.kept.setdefault(column, {})[digit] = scores
                run.aurocs.setdefault(column, {})[digit] = auroc(scores, labels)
            log(
                f"[{time.perf_counter() - started:6.0f}s] split {split_seed}, digit {digit} "
                + ", ".join(f"{c} AUROC {fmt(run.aurocs[c][digit])}" for c in columns)
                + f" ({time.perf_counter() - began:.1f}s)"
            )
            if protocol == "validation":  # every scoring, to compare candidates
                for other in members[0]:
                    variants = {"": members[0][other][1]}
                    if len(members) > 1:
                        variants[f" x{len(members)}"] = ensemble(members, other)
                    for suffix, scores in variants.items():
                        key = f"{name}{suffix} [{other}]"
                        run.extra.setdefault(key, {})[digit] = auroc(scores, labels)
                        run.raw[f"{key}/{digit}"] = scores
                run.raw[f"labels/{digit}"] = labels
    return run


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument(
        "--models", default=",".join(m for m in [*RECIPES, *BENCH_ONLY] if m not in OPT_IN),
        help=f"default: every model but {', '.join(OPT_IN)} (OPT_IN: slow; name it to run it)",
    )  # fmt: skip
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 digits, few epochs")
    parser.add_argument("--protocol", choices=("test", "validation"), default="test")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL.KEY=VALUE")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--save", metavar="NPZ", help="validation: save every score array")
    parser.add_argument(
        "--split-seed", type=int, default=SPLIT["seed"], help="another 70/30 split of the "
        "sample, to see how much the per-digit results move (never written to the report)"
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=REPEATED_SPLITS, help="report: run the best model and "
        "PCA on this many 70/30 splits (seeds 0, 1, ...) and judge the target on their average"
    )  # fmt: skip
    parser.add_argument(
        "--extra-scores", action="store_true", help="validation: also the round-4 candidate "
        "scores (SSIM, RAPP, latent Mahalanobis, sums), for the models and PCA"
    )  # fmt: skip
    args = parser.parse_args(argv)

    digits = [int(d) for d in args.digits.split(",")]
    models = [m for m in args.models.split(",") if m]
    configs = model_configs()
    unknown = [m for m in models if m not in configs]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {', '.join(configs)}")
    if args.repeats < 1:
        raise SystemExit(
            f"--repeats must be at least 1 (the report's own split), got {args.repeats}"
        )
    scale = args.epochs_scale
    if args.quick:
        digits, scale = list(QUICK["digits"]), QUICK["epochs_scale"] * scale
    overrides = parse_overrides(args.set, configs)

    load_before = os.getloadavg()[0]
    cpu_start = time.process_time()
    start = time.perf_counter()
    log(f"protocol {args.protocol}, digits {digits}, models {models}, epochs x{scale:g}")
    for name in overrides:
        log(f"override {name}")
    run = run_split(
        args.split_seed, args.protocol, digits, models, configs, scale, args.extra_scores, start
    )
    split_seconds = time.perf_counter() - start
    columns = [name for name in run.aurocs if name != "PCA"]
    log("\n" + results_table(digits, columns, run.aurocs, run.ks))
    log("mean: " + ", ".join(f"{k} {fmt(mean_of(v))}" for k, v in run.aurocs.items()))
    for key, values in {**run.extra, **{f"PCA [{k}]": v for k, v in run.sweep.items()}}.items():
        wins = sum(values[d] > run.aurocs["PCA"][d] for d in digits)
        per_digit = " ".join(fmt(values[d]) for d in digits)
        log(f"{args.protocol} {key:<32} mean {fmt(mean_of(values))}, wins vs PCA "
            f"{wins}/{len(digits)}, per digit {per_digit}")  # fmt: skip
    if args.save:
        pca = {f"PCA/{d}": run.kept["PCA"][d] for d in digits}
        np.savez_compressed(args.save, **run.raw, **pca)
        log(f"scores saved to {args.save}")
    log(f"split {args.split_seed}: {split_seconds:.0f}s wall")
    if args.protocol != "test" or args.quick or args.no_report or args.split_seed != SPLIT["seed"]:
        return

    best = best_column(run)
    runs = [run]  # the best model (config unchanged) and PCA on the other repeated splits
    for offset in range(1, args.repeats):
        log(f"repeated split {SPLIT['seed'] + offset}: {best} and PCA")
        runs.append(
            run_split(SPLIT["seed"] + offset, "test", digits, [best.split(" x")[0]], configs,
                      scale, started=start)
        )  # fmt: skip
    clock = {
        "total": time.perf_counter() - start,
        "split": split_seconds,
        "cpu": time.process_time() - cpu_start,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    log(f"total {clock['total']:.0f}s wall, {clock['cpu']:.0f}s CPU")
    setup = {"split": SPLIT, "seed": SEED, "overrides": overrides}
    body = report_body(runs, digits, models, configs, setup, clock)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.one_class_mnist", *given])
    path = write_report("one_class_mnist", "One-class anomaly detection on bundled MNIST", body,
                        command)  # fmt: skip
    log(f"\nreport: {path}")


if __name__ == "__main__":
    main()
