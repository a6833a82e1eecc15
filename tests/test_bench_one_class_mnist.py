"""The one-class benchmark (bench/one_class_mnist.py) scores zoo models with the zoo's own
code, keeps its lab notes in markdown, and writes a report that links them."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import zoo
from bench import one_class_mnist, one_class_scores
from bench.one_class_report import NOTES, SplitRun, report_body
from zoo.calibration import anomaly_scores

BENCH = Path(one_class_mnist.__file__).parent
TINY = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def split(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normal training images, evaluation images): 20 and 12 real digits."""
    return digits[:20], digits[20:]


@pytest.fixture(scope="module")
def trained_ae(split) -> Any:
    """A tiny conv autoencoder trained for one epoch by the benchmark's own training code,
    with the conv_ae recipe's score options."""
    config = {**TINY, "score_blur": 1.0, "score_top_fraction": 0.05}
    return one_class_mnist.fit_member("conv_ae_tiny", config, split[0], 1.0, 0)


def test_benchmark_scores_are_the_zoos_anomaly_scores(trained_ae, split) -> None:
    x_fit, x_eval = split
    names = ["model", "blur:0.5", "top0.2:1.5"]
    scores = one_class_scores.member_scores(trained_ae, x_fit, x_eval, names)
    np.testing.assert_array_equal(scores["model"][0], anomaly_scores(trained_ae, x_fit))
    np.testing.assert_array_equal(scores["model"][1], anomaly_scores(trained_ae, x_eval))
    # a residual-score candidate is the zoo model built with that option, same weights
    for name, options in (
        ("blur:0.5", {"score_blur": 0.5, "score_top_fraction": 1.0}),
        ("top0.2:1.5", {"score_blur": 1.5, "score_top_fraction": 0.2}),
    ):
        built = zoo.load("conv_ae_tiny", **options)
        built.set_weights(trained_ae.get_weights())
        np.testing.assert_array_equal(scores[name][1], anomaly_scores(built, x_eval))
        assert not np.allclose(scores[name][1], scores["model"][1])
    # the model's own options are back after the candidates
    assert (trained_ae.score_blur, trained_ae.score_top_fraction) == (1.0, 0.05)


def test_vae_score_is_its_negative_elbo_through_the_zoo(split) -> None:
    x_fit, x_eval = split
    vae = one_class_mnist.fit_member("vae_tiny", TINY, x_fit, 1.0, 0)
    assert one_class_scores.candidate_names(vae) == ["model"]  # no residual to blur
    scores = one_class_scores.member_scores(vae, x_fit, x_eval, ["model"])
    np.testing.assert_array_equal(scores["model"][1], anomaly_scores(vae, x_eval))


def test_pca_residual_score_has_the_autoencoders_definition(trained_ae, split) -> None:
    """The PCA baseline's ``top<f>:<s>`` row scores its residual as the zoo scores an
    autoencoder's: the same numbers for the same residual, up to float32 round-off."""
    x_eval = split[1]
    residual = x_eval - np.asarray(trained_ae.reconstruct(x_eval))
    numpy_scores = one_class_scores.residual_scores(residual, (1.0, 0.05))
    np.testing.assert_allclose(numpy_scores, anomaly_scores(trained_ae, x_eval), rtol=1e-5)


def test_score_names_parse_to_the_zoo_options() -> None:
    assert one_class_scores.residual_option("blur:1") == (1.0, 1.0)
    assert one_class_scores.residual_option("top0.05:1.5") == (1.5, 0.05)
    assert one_class_scores.residual_option("pixvar:0.1") is None
    assert one_class_scores.residual_option("blur:1+latent") is None  # a sum of two scores
    conv = one_class_mnist.model_configs()["conv_ae"]
    assert one_class_scores.score_of(conv) == (1.0, 0.05)
    assert one_class_scores.score_label((1.0, 0.05)) == "top0.05:1"
    assert one_class_scores.score_of({**conv, "scoring": "blur:2"}) == (2.0, 1.0)
    assert one_class_scores.score_of({"latent_dim": 16}) is None


def test_unknown_candidate_score_is_named(trained_ae, split) -> None:
    with pytest.raises(ValueError, match=r"unknown score\(s\) \['psnr'\]; choose from"):
        one_class_scores.member_scores(trained_ae, *split, ["psnr"])


def module_string_constants(path: Path) -> list[str]:
    """Names of module-level string constants longer than 300 characters (lab notes)."""
    tree = ast.parse(path.read_text())
    return [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str) and len(node.value.value) > 300
        for target in node.targets
        if isinstance(target, ast.Name)
    ]  # fmt: skip


def test_lab_notes_live_in_markdown_not_in_the_scripts() -> None:
    for script in ("one_class_mnist.py", "one_class_scores.py", "one_class_report.py"):
        assert module_string_constants(BENCH / script) == [], script
        assert len((BENCH / script).read_text().splitlines()) <= 500, script
    notes = (BENCH / "reports" / NOTES).read_text()
    # the candidate table, each round's findings, the history and the references
    assert notes.count("\n| `conv_ae` |") >= 25
    for text in (
        "## What we tried",
        "Round 4 came after the third full test run",
        "Judging the target on this average was decided after four test runs",
        "Deep SVDD (one-class) | about 95",
    ):
        assert text in notes, text
    # the committed report links the notes
    report = (BENCH / "reports" / "one_class_mnist.md").read_text()
    assert f"({NOTES}#what-we-tried)" in report
    assert "Round 4 came after" not in report


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    return {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }


def test_report_links_every_note_section() -> None:
    digits = [0, 8]
    run = SplitRun(seed=0, n_eval=6, ks={0: 3, 8: 4}, seconds={"conv_ae": 1.0})
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = {"PCA": np.array([1.0, 2, 3, 2.5, 4, 5]), "conv_ae": np.array([1.0, 2, 3, 4, 5, 6])}
    for d in digits:
        run.kept["labels"][d] = labels
        for column, values in scores.items():
            run.kept.setdefault(column, {})[d] = values
            run.aurocs.setdefault(column, {})[d] = 1.0 if column == "conv_ae" else 8 / 9
    run.sweep = {"90% variance": dict(run.aurocs["PCA"])}
    again = SplitRun(seed=1, n_eval=6, aurocs={"PCA": {0: 0.9, 8: 0.8}, "conv_ae": {0: 1, 8: 1}})
    configs = {"conv_ae": {"latent_dim": 16}}
    setup = {"split": {"test_fraction": 0.3, "seed": 0}, "seed": 0, "overrides": []}
    clock = dict.fromkeys(("total", "split", "cpu", "load_before", "load_after"), 1.0)
    body = report_body([run, again], digits, ["conv_ae"], configs, setup, clock)
    assert "judged on the average over 2 splits (see Repeated splits): met**" in body
    assert "| **mean** | **100.0** | 88.9 |" in body
    anchors = heading_anchors((BENCH / "reports" / NOTES).read_text())
    links = re.findall(rf"\({re.escape(NOTES)}#([a-z0-9-]+)\)", body)
    assert sorted(set(links)) == ["published-references", "repeated-splits", "what-we-tried"]
    assert set(links) <= anchors
