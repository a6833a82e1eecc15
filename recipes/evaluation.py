"""``zoo evaluate`` on a run: load the run, read what its recipe says, then call the
core evaluation of the loaded model (:mod:`zoo.anomaly`, :mod:`zoo.likelihood`,
:mod:`zoo.metrics.quality_evaluation`).

The core functions take a model and plain arguments; only this layer knows run folders
and recipes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.recipes.recipe import load_recipe
from zoo.recipes.runs import load_run

if TYPE_CHECKING:  # pragma: no cover
    from zoo.anomaly import EvaluationData
    from zoo.metrics import AnomalyReport, SampleQualityReport
    from zoo.metrics.features import FeatureExtractor


def evaluation_dir(target: str | os.PathLike, out_dir: str | os.PathLike | None) -> Path:
    """Where an evaluation of ``target`` writes: ``out_dir`` if given, else
    ``<run>/evaluation`` for a run folder, else ``./evaluation``."""
    if out_dir:
        return Path(out_dir)
    target = Path(target)
    return target / "evaluation" if target.is_dir() else Path("evaluation")


def recipe_classes(target: str | os.PathLike) -> list[int] | None:
    """The classes a run trained on (its recipe's ``data.classes``), or None for all
    classes or when ``target`` is not a run folder with a ``recipe.toml``."""
    recipe = Path(target) / "recipe.toml"
    if not recipe.is_file():
        return None
    return list(load_recipe(recipe).data["classes"]) or None


def evaluate_anomaly_run(
    target: str | os.PathLike,
    *,
    normal_classes: list[int] | None = None,
    target_fpr: float = 0.01,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[AnomalyReport, Path, EvaluationData]:
    """``zoo evaluate RUN --task anomaly``: :func:`zoo.anomaly.evaluate_model` on the
    model of a run folder, ``.keras`` file or model name, writing into ``out_dir``
    (default: :func:`evaluation_dir`). ``normal_classes`` defaults to the run recipe's
    ``data.classes`` (one-class training)."""
    from zoo.anomaly import evaluate_model

    model = load_run(target)
    if normal_classes is None:
        normal_classes = recipe_classes(target)
    return evaluate_model(
        model,
        evaluation_dir(target, out_dir),
        normal_classes=normal_classes,
        target_fpr=target_fpr,
        seed=seed,
    )


def evaluate_likelihood_run(
    target: str | os.PathLike, *, out_dir: str | os.PathLike | None = None, **options: Any
) -> tuple[dict[str, Any], Path]:
    """``zoo evaluate RUN --task likelihood``: :func:`zoo.likelihood.evaluate_model` (its
    keyword ``options``: ``k``, ``n``, ``split``, ``batch_size``, ``batch_k``, ``seed``,
    ``images``, ``labels``) on the model of a run folder, ``.keras`` file or model name,
    writing into ``out_dir`` (default: :func:`evaluation_dir`)."""
    from zoo.likelihood import evaluate_model

    model = load_run(target)
    return evaluate_model(
        model, evaluation_dir(target, out_dir), target=str(Path(target)), **options
    )


def evaluate_samples_run(
    target: str | os.PathLike,
    *,
    n: int = 1000,
    seed: int = 0,
    feature_extractor: str | FeatureExtractor = "mnist_classifier",
    out_dir: str | os.PathLike | None = None,
    real_reference: Any = None,
    real_heldout: Any = None,
) -> tuple[SampleQualityReport, Path]:
    """``zoo evaluate RUN --task samples``: :func:`zoo.metrics.evaluate_samples` (``n``
    samples from fixed-seed latent points against the bundled sample's train split,
    beside the test-split floor) on the model of a run folder, ``.keras`` file or model
    name, writing into ``out_dir`` (default: :func:`evaluation_dir`). Returns
    ``(report, out_dir)``."""
    from zoo.metrics import evaluate_samples

    model = load_run(target)
    return evaluate_samples(
        model, evaluation_dir(target, out_dir), n=n, seed=seed, feature_extractor=feature_extractor,
        real_reference=real_reference, real_heldout=real_heldout, source=str(Path(target)),
    )  # fmt: skip


def evaluate_translation_run(
    target: str | os.PathLike, *, n: int = 500, out_dir: str | os.PathLike | None = None
) -> tuple[dict[str, Any], Path]:
    """``zoo evaluate RUN --task translation``: :func:`zoo.translation.evaluation.
    evaluate_translation` on the first ``n`` held-out pairs of the run's recipe data."""
    from zoo.recipes.pair_data import held_out_pairs

    from zoo.tasks import declaration_of
    from zoo.translation.evaluation import evaluate_translation

    model = load_run(target)
    recipe_file = Path(target) / "recipe.toml"
    if not recipe_file.is_file():
        raise FileNotFoundError(
            f"{target} is not a run folder with a recipe.toml: translation quality is measured "
            "on the held-out pairs of the run's recipe data"
        )
    sources, targets, what = held_out_pairs(load_recipe(recipe_file), declaration_of(model), n)
    return evaluate_translation(model, sources, targets, evaluation_dir(target, out_dir), what)
