"""The ``zoo`` command: list models, train recipes, draw samples, run the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Sequence

DESCRIPTION = """The generative model zoo.

  zoo list [PATTERN]            registered models (and --recipes: bundled recipes)
  zoo train RECIPE [--set k=v]  train a recipe; TensorBoard logs, checkpoints, sample grids
                                (--strategy mirrored|multi_worker, --precision mixed_bfloat16)
  zoo sample RUN_OR_MODEL       a PNG grid of samples (generators) or reconstructions
  zoo export RUN_OR_MODEL       SavedModel (TF Serving layout) + ONNX, parity-checked
  zoo serve --model_config_file serving/models.config
                                TF Serving's REST and gRPC APIs, locally, over the same config
  zoo evaluate RUN              anomaly (AUROC, AUPR, F1, plots), likelihood (VAE: IS log p(x);
                                diffusion: the variational bound in bits/dim), or sample
                                quality (GANs, diffusion: FID/KID/... in a classifier's features)
  zoo demo                      the main job: train, export, serve, request (bundled data)
"""


#: stderr lines TensorFlow's native libraries print while loading, before its log level
#: (TF_CPP_MIN_LOG_LEVEL) applies: absl's pre-initialisation banner, INFO/WARNING lines,
#: and the CUDA probe's error on a machine without a GPU.
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] failed call to cuInit"
)


def _quiet_tensorflow() -> None:
    """TensorFlow's C++ INFO/WARNING lines off (unless TF_CPP_MIN_LOG_LEVEL is set), and
    its Python deprecation notices and tf2onnx's warnings (the export checks the ONNX
    itself) out of the zoo's output. Only those loggers are touched."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").addFilter(_not_a_deprecation)  # once: same filter
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    warnings.formatwarning = _format_warning


def _not_a_deprecation(record: logging.LogRecord) -> bool:
    return "is deprecated and will be removed" not in record.getMessage()


_PYTHON_FORMATWARNING = warnings.formatwarning


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """The zoo's own warnings as one line, ``zoo: warning: ...`` (not the file, line
    number and source line Python adds); other warnings as Python formats them."""
    if category.__module__.partition(".")[0] == "zoo":
        return f"zoo: warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def _load_tensorflow() -> None:
    """Import TensorFlow (and probe its devices) with stderr captured, then print back
    every line except :data:`NATIVE_NOISE` (kept when TF_CPP_MIN_LOG_LEVEL=0)."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not NATIVE_NOISE.match(line):
                    sys.stderr.write(line)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows in columns as wide as their longest entry (the last column is free text)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        print("  ".join([*padded, row[-1]]))


def cmd_list(args: argparse.Namespace) -> int:
    from zoo import registry
    from zoo.recipes import list_recipes, load_recipe

    if args.recipes:
        rows = [("recipe", "model", "description")]
        for name in list_recipes():
            recipe = load_recipe(name)
            rows.append((name, recipe.model, recipe.description))
        _print_table(rows)
        return 0
    names = registry.list_models(args.pattern, include_tiny=args.tiny)
    if not names:
        print(f"no model matches {args.pattern!r}; `zoo list` shows them all", file=sys.stderr)
        return 1
    specs = [registry.get_spec(name) for name in names]
    _print_table(
        [("name", "family", "description")] + [(s.name, s.family, s.description) for s in specs]
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from zoo.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.set + train_flag_overrides(args))  # before TF loads
    _load_tensorflow()
    from zoo.recipes import train

    result = train(
        recipe,
        logdir=args.logdir,
        resume=args.resume,
        run_name=args.run_name,
        overwrite=args.overwrite,
    )
    run = result.run_dir
    print(f"\nrun folder:   {run}")
    for label, path in (
        ("model", run / "model.keras"),
        ("checkpoints", run / "checkpoints"),
        ("sample grids", run / "samples"),
        ("latent plots", run / "latent"),
    ):
        if path.exists():  # only what this run wrote (e.g. no grids with num_samples = 0)
            print(f"{label + ':':<13} {path}")
    if (run / "train").is_dir():
        print(f"TensorBoard:  tensorboard --logdir {run.parent}")
    return 0


def train_flag_overrides(args: argparse.Namespace) -> list[str]:
    """``--strategy``, ``--devices`` and ``--precision`` as recipe overrides (they win over
    the recipe and ``--set``, and are recorded in the run's ``recipe.toml``)."""
    out = []
    if args.strategy is not None:
        out.append(f"distribute.strategy={json.dumps(args.strategy)}")
    if args.devices is not None:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        out.append(f"distribute.devices={json.dumps(devices)}")
    if args.precision is not None:
        out.append(f"training.precision={json.dumps(args.precision)}")
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    from zoo.recipes.pair_data import run_pairs
    from zoo.recipes.runs import load_run
    from zoo.sampling import sample_grid

    model = load_run(args.run)
    pairs = run_pairs(args.run, model, max(args.n // 3, 1))
    path = sample_grid(model, n=args.n, seed=args.seed, out=args.out, pairs=pairs)
    print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.calibration import CalibrationSizeWarning
    from zoo.export import export_cli

    with warnings.catch_warnings():  # printed below as one line, from the metadata
        warnings.simplefilter("ignore", CalibrationSizeWarning)
        result = export_cli(
            args.target, args.out, formats=args.format, name=args.name,
            target_fpr=args.target_fpr, calibration=args.calibration, threshold=args.threshold,
        )  # fmt: skip
    print(f"SavedModel: {result.version_dir} (version {result.version})")
    for signature, path in sorted(result.onnx_paths.items()):
        print(f"ONNX:       {path} ({signature})")
    if result.threshold is not None:
        t = result.threshold
        info = result.metadata.get("calibration") or {}
        if t.method == "quantile":
            how = f"(quantile, target FPR {t.target_fpr}) calibrated on {info['description']}"
        elif info.get("n") and t.observed_fpr is not None:
            how = f"({t.method}), observed FPR {t.observed_fpr:.3g} on {info['description']}"
        else:
            how = f"({t.method})"
        print(f"threshold:  {t.value:.6g} {how}")
        if info.get("warning"):
            print(f"zoo export: warning: {info['warning']}", file=sys.stderr)
    print(f"parity:     max |diff| {result.parity.get('max_abs_diff', 0.0):.2e} (within tolerance)")
    return 0


def evaluation_task(run: str, task: str | None) -> str:
    """The evaluation ``zoo evaluate`` runs: ``task`` if the model's declaration lists it,
    else (``task`` None) the declaration's first, e.g. anomaly for autoencoders,
    likelihood for VAEs, samples for GANs."""
    from zoo.recipes.runs import load_run
    from zoo.tasks import declaration_of

    model = load_run(run)
    declaration = declaration_of(model)
    offered = declaration.evaluations
    if not offered:
        raise EvaluationError(f"{model.name} ({declaration.family}) declares no evaluation")
    if task is None:
        return offered[0]
    if task not in offered:
        raise EvaluationError(
            f"--task {task} does not apply to {model.name} ({declaration.family}); it offers "
            f"{', '.join(offered)}"
        )
    return task


class EvaluationError(ValueError):
    """``zoo evaluate --task`` names an evaluation the model does not offer."""


def cmd_evaluate(args: argparse.Namespace) -> int:
    task = evaluation_task(args.run, args.task)
    if task == "translation":
        from zoo.recipes.evaluation import evaluate_translation_run

        _, out = evaluate_translation_run(args.run, n=args.n, out_dir=args.out)
        print((out / "report.md").read_text(), end="")
        print(f"report: {out / 'report.md'}  grid: {out / 'translations.png'}")
        return 0
    if task == "likelihood":
        from zoo.recipes.evaluation import evaluate_likelihood_run

        results, out = evaluate_likelihood_run(
            args.run,
            k=args.k,
            n=args.n,
            seed=args.seed,
            out_dir=args.out,
            num_timesteps=args.timesteps,
        )
        for key, value in results.items():
            if isinstance(value, (int, float, str)):
                print(f"{key:<32} {value}")
        print(f"report: {out}")
        return 0
    if task == "samples":
        from zoo.metrics import FeatureExtractorUnavailableError
        from zoo.recipes.evaluation import evaluate_samples_run

        try:
            report, out = evaluate_samples_run(
                args.run, n=args.n, seed=args.seed, out_dir=args.out,
                feature_extractor=args.feature_extractor,
            )  # fmt: skip
        except FeatureExtractorUnavailableError as error:
            print(f"zoo evaluate: error: {error}", file=sys.stderr)
            return 2
        print(report.to_markdown())
        print(f"report: {out}")
        return 0
    from zoo.calibration import CalibrationSizeWarning
    from zoo.recipes.evaluation import evaluate_anomaly_run

    try:
        with warnings.catch_warnings():  # printed below as one line
            warnings.simplefilter("ignore", CalibrationSizeWarning)
            report, out, data = evaluate_anomaly_run(
                args.run, normal_classes=args.normal_classes, target_fpr=args.target_fpr,
                out_dir=args.out, seed=args.seed,
            )  # fmt: skip
    except TypeError as error:  # not an anomaly detector (e.g. a GAN)
        print(f"zoo evaluate: error: {error}", file=sys.stderr)
        return 2
    if data.calibration_warning:
        print(f"zoo evaluate: warning: {data.calibration_warning}", file=sys.stderr)
    print(f"data: {data.description}")
    print(report)
    print(f"report: {out / 'report.md'}  plot: {out / 'scores.png'}  TensorBoard: {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from zoo.serving.demo import run_demo

    run_demo(args.out, models_root=args.models_root, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list registered models or bundled recipes")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. '*gan*'")
    p.add_argument("--recipes", action="store_true", help="list the bundled recipes instead")
    p.add_argument("--tiny", action="store_true", help="include the tiny test variants")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "train",
        help="train a recipe (bundled name or .toml path)",
        description="Train a recipe. Logs TensorBoard scalars (per step and epoch), image "
        "grids and hyper-parameters to LOGDIR/RUN, checkpoints every epoch, saves model.keras.",
    )
    p.add_argument("recipe", help="bundled recipe name (see `zoo list --recipes`) or a .toml path")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set epochs=3 --set model_config.latent_dim=16",
    )
    p.add_argument("--logdir", default="runs", help="parent folder of run folders (default: runs)")
    p.add_argument("--run-name", help="run folder name (default: the recipe's name)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run from its last checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument(
        "--strategy",
        help="tf.distribute strategy: default | mirrored (one machine, several devices) | "
        "multi_worker (the cluster in TF_CONFIG); data.batch_size stays the GLOBAL batch",
    )
    p.add_argument(
        "--devices",
        metavar="LIST",
        help="mirrored: comma-separated devices, e.g. /gpu:0,/gpu:1 (default: every GPU, else CPU)",
    )
    p.add_argument(
        "--precision", help="float32 (default) | mixed_float16 | mixed_bfloat16 (dtype policy)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "sample",
        help="write a PNG grid of samples from a run, .keras file or model name",
        description="Generators and VAEs: samples from fixed-seed latent points. Autoencoders: "
        "reconstructions of bundled MNIST digits (originals and reconstructions side by side).",
    )
    p.add_argument("run", help="run folder, .keras file, or registered model name (untrained)")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent points")
    p.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "export",
        help="export a run, .keras file or model name to SavedModel + ONNX",
        description="Writes OUT/NAME/<version>/ (TF Serving layout, next free version, atomic) "
        "with named signatures, warmup requests and metadata, and ONNX files in "
        "OUT/NAME/onnx/<version>/. Keras, SavedModel and ONNX Runtime must agree or the export "
        "fails. Anomaly models (autoencoders, VAEs) get a threshold at --target-fpr calibrated "
        "on the run's own held-out normal data (its recipe's validation split or held-out "
        "fraction, with its data.classes filter), or on --calibration; a .keras file or model "
        "name without a run folder needs --calibration or --threshold.",
    )
    p.add_argument("target", help="run folder, .keras file or registered model name")
    p.add_argument("--out", default="serving/models", help="export root (default serving/models)")
    p.add_argument("--format", default="savedmodel,onnx", help="savedmodel[,onnx] (default both)")
    p.add_argument("--name", help="served model name (default: the model's name, e.g. dcgan)")
    p.add_argument("--target-fpr", type=float, default=0.01, help="threshold's false-positive rate")
    p.add_argument(
        "--calibration", metavar="PATH",
        help="held-out normal data to calibrate on instead of the run's: an .npz with `images` "
        "(`sequences` for sequence models; + `labels` for conditional models) or an image folder",
    )  # fmt: skip
    p.add_argument(
        "--threshold", type=float, help="set the anomaly threshold instead of calibrating it"
    )
    p.set_defaults(func=cmd_export)

    sub.add_parser(
        "serve",
        help="serve a models.config over TF Serving's REST API (zoo serve --help for flags)",
        add_help=False,
    )

    p = sub.add_parser(
        "evaluate",
        help="evaluate an anomaly detector (autoencoder or VAE run)",
        description="Calibrate the threshold on held-out normal data at --target-fpr, then "
        "report AUROC, AUPR, F1 at the threshold and the confusion matrix, with a PNG of the "
        "score histograms and ROC curve. Images: bundled MNIST test split (anomalies = other "
        "digits with --normal-classes, else corrupted digits). Sequences: synthetic series "
        "with injected anomalies.",
    )
    p.add_argument("run", help="run folder, .keras file or registered model name")
    p.add_argument(
        "--normal-classes", type=lambda s: [int(c) for c in s.split(",")],
        help="digits that are normal, e.g. 3 or 1,7 (default: the recipe's data.classes)",
    )  # fmt: skip
    p.add_argument("--target-fpr", type=float, default=0.01, help="threshold's false-positive rate")
    p.add_argument("--out", help="output folder (default RUN/evaluation)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/test split")
    p.add_argument(
        "--task", choices=("anomaly", "likelihood", "samples", "translation"),
        help="default: anomaly (autoencoders), likelihood (VAEs), samples (GANs, diffusion), "
        "translation (image-to-image: L1/PSNR/SSIM or cycle L1 on the recipe's held-out pairs)",
    )  # fmt: skip
    p.add_argument("--k", type=int, default=5000, help="likelihood: importance samples")
    p.add_argument(
        "--timesteps", type=int, default=None, metavar="K",
        help="likelihood of a diffusion model: a stratified Monte Carlo estimate of the bound "
        "over K steps per example (default: the exact sum over all T steps, T network "
        "calls per example)",
    )  # fmt: skip
    p.add_argument("--n", type=int, default=1000, help="likelihood/samples/translation: examples")
    p.add_argument(
        "--feature-extractor", choices=("mnist_classifier", "inception_v3"),
        default="mnist_classifier",
        help="samples: the bundled MNIST classifier (offline, 28x28x1) or InceptionV3 "
        "(ImageNet weights: downloaded once, or already in the Keras cache)",
    )  # fmt: skip
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="the README's main job on the bundled data")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument(
        "--models-root", help="where to export (the config's /models; default OUT/models)"
    )
    p.add_argument("--quick", action="store_true", help="a few steps only (for tests)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # flags named like tensorflow_model_server's
        _load_tensorflow()
        from zoo.serving.server import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command not in ("list", "train"):  # train loads it once its recipe is checked
        _load_tensorflow()
    try:
        return args.func(args)
    except _user_errors() as error:
        print(f"zoo {args.command}: error: {error}", file=sys.stderr)
        return 2


#: Errors whose message is the whole story (printed as one line, exit status 2), by the
#: module defining them. Only modules already imported are looked in: an error class
#: cannot have been raised otherwise, and `zoo list` must not import TensorFlow.
USER_ERRORS: dict[str, tuple[str, ...]] = {
    "builtins": ("FileNotFoundError",),
    "zoo.checkpoints": ("TrainingDivergedError",),
    "zoo.cli": ("EvaluationError",),
    "zoo.sampling": ("SampleError",),
    "zoo.data": ("DataError",),
    "zoo.distribute": ("DistributeError",),
    "zoo.export": ("CalibrationError", "ExportPathError", "OnnxConversionError", "ParityError"),
    "zoo.recipes.distributed_loop": ("WorkerFailedError",),
    "zoo.recipes.recipe": ("RecipeError",),
    "zoo.registry": ("ConfigError", "UnknownModelError"),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    modules = [sys.modules[name] for name in USER_ERRORS if name in sys.modules]
    found = (getattr(m, name, None) for m in modules for name in USER_ERRORS[m.__name__])
    return tuple(error for error in found if isinstance(error, type))


if __name__ == "__main__":
    sys.exit(main())
