"""A new kind of model is one module: a toy translator defined entirely in this file.

``FlipTranslator`` learns to mirror images left-right; its task declaration
(``FlipTasks``) states that it implements ``Translator`` and how it is served. Nothing
under export/, serving/, recipes/ or zoo/cli.py knows about it, yet it trains through the
recipe runner (which logs its translation grids), exports with parity (SavedModel, ONNX,
the TF1 loader), and is served over REST by a ``zoo serve`` process that has never
imported this file. The last test checks that those folders test no trainer's class or
family.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from export_helpers import run_tf1_session, zoo_serve
from recipe_helpers import recipe_toml

import zoo
from zoo import losses, registry
from zoo.tasks import (
    Images,
    SignatureBuilder,
    SignatureSet,
    TaskDeclaration,
    Tolerance,
    Translator,
    declaration_of,
)
from zoo.trainers import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAME = "flip_translator_toy"
#: A tolerance of its own, to show that parity holds each signature to what it declares.
TRANSLATE_TOLERANCE = Tolerance(atol=3e-4, rtol=2e-5)


class FlipTasks(TaskDeclaration):
    """The toy's declaration: image in, image out; served as ``translate``."""

    family = "translator"
    tasks = (Translator,)

    @property
    def examples(self) -> Images:
        return Images(tuple(self.model.source_shape))

    def signatures(self, threshold=None, normalization=None) -> SignatureSet:
        builder = SignatureBuilder()
        spec = tf.TensorSpec([None, *self.model.source_shape], tf.float32, name="images")
        builder.add(
            "translate",
            lambda i: {"translations": tf.cast(self.model.translate(i["images"]), tf.float32)},
            [spec],
            onnx=True,
            description="images [N, H, W, C] in [0, 1] -> translations, mirrored left-right",
            tolerance=TRANSLATE_TOLERANCE,
        )
        return builder.build("translate", [self.model.network])

    def use_notes(self) -> list[str]:
        return ["- Mirrors digits left-right (a toy translator for the tests)."]


@keras.saving.register_keras_serializable(package="zoo_tests")
class FlipTranslator(Trainer):
    """Learns x -> x mirrored left-right with a per-example L1 loss."""

    declaration = FlipTasks
    NETWORKS = ("network",)

    def __init__(self, network: keras.Model, *, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.network = network

    @property
    def source_shape(self) -> tuple[int, ...]:
        return tuple(self.network.input_shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.network.output_shape[1:])

    @property
    def image_shape(self) -> tuple[int, ...]:  # what the recipe runner feeds
        return self.source_shape

    def call(self, images, training: bool = False):
        return self.network(images, training=training)

    def translate(self, images):
        return self.network(images, training=False)

    def step_losses(self, images, training: bool):
        target = tf.reverse(images, axis=[2])
        error = tf.reduce_sum(tf.abs(self.network(images, training=training) - target), [1, 2, 3])
        return {"loss": losses.average(error)}


def build_flip_translator(image_shape=(28, 28, 1), width: int = 4, seed: int | None = None):
    """A two-layer convnet translator (the registry's builder for the toy)."""
    inputs = keras.Input(image_shape)
    hidden = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(image_shape[-1], 3, padding="same", activation="sigmoid")(hidden)
    model = FlipTranslator(keras.Model(inputs, outputs, name="flip_net"), seed=seed)
    model.build()
    return model


@pytest.fixture(scope="module")
def registered():
    """The toy in the registry for this module's tests only (other test files list every
    registered model and must not see it)."""
    registry.register(NAME, family="translator", description="toy: mirror images")(
        build_flip_translator
    )
    yield NAME
    del registry._REGISTRY[NAME]


@pytest.fixture(scope="module")
def trained_run(registered, tmp_path_factory):
    """The toy trained for one step through the recipe runner (``zoo train``'s body)."""
    from zoo.recipes import train

    root = tmp_path_factory.mktemp("toy_run")
    recipe = root / "flip.toml"
    recipe.write_text(
        recipe_toml(
            "flip",
            registered,
            epochs=1,
            training="steps_per_epoch = 1\nverbose = 0",
            logging="num_samples = 4\nsample_every_epochs = 1",
        )
    )
    return train(recipe, logdir=root / "runs").run_dir


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    from zoo.export import export_cli

    out = tmp_path_factory.mktemp("toy_models")
    return zoo.load_run(trained_run), export_cli(trained_run, out, name="flip")


def test_declaration_states_the_task(registered):
    model = zoo.load(registered)
    declaration = declaration_of(model)
    assert declaration.implements(Translator) and isinstance(model, Translator)
    assert declaration.input_key == "images" and declaration.num_classes == 0
    signature_set = declaration.signatures()
    assert list(signature_set.signatures) == ["translate"]
    assert signature_set.resolve("serving_default").tolerance == TRANSLATE_TOLERANCE


def test_runner_trains_it_and_logs_translation_grids(trained_run):
    history = json.loads((trained_run / "history.json").read_text())
    assert np.isfinite(history["loss"][0]) and history["loss"][0] > 0
    grids = sorted(p.name for p in (trained_run / "samples").glob("*.png"))
    assert grids == ["translations_epoch001.png"]  # no generator: no sample grid
    model = zoo.load_run(trained_run)
    assert isinstance(model, FlipTranslator)


def test_export_checks_parity_to_the_declared_tolerance(exported):
    _, result = exported
    meta = result.metadata
    assert meta["model"]["family"] == "translator" and meta["model"]["tasks"] == ["Translator"]
    assert meta["model"]["registered_name"] == NAME  # from the run's recipe
    assert meta["serving_default"] == "translate" and meta["threshold"] is None
    assert set(result.onnx_paths) == {"translate"}
    parity = meta["parity"]
    assert parity["passed"] and set(parity["backends"]) == {
        "savedmodel",
        "tf1_session",
        "onnxruntime",
    }
    assert parity["tolerances"]["translate"] == TRANSLATE_TOLERANCE.to_dict()
    card = result.model_card.read_text()
    assert "Mirrors digits left-right" in card and "atol 0.0003, rtol 2e-05" in card


def test_tf1_loader_runs_it_as_tf_serving_does(exported):
    model, result = exported
    images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    keys, runs = run_tf1_session(result.version_dir, lambda names: {"images": images})
    assert keys == ["serving_default", "translate"]
    want = np.asarray(model.translate(images))
    for key in keys:
        np.testing.assert_allclose(runs[key][1]["translations"], want, atol=1e-5)


def test_zoo_serve_answers_rest_requests_without_the_toy_code(exported, tmp_path):
    from zoo.serving.client import ServingClient

    model, result = exported
    with zoo_serve({"flip": result.version_dir.parent}, tmp_path) as (url, line):
        assert "flip v1" in line and "translate" in line, line
        images = np.random.default_rng(1).uniform(size=(2, 28, 28, 1)).astype(np.float32)
        client = ServingClient(url, model="flip")
        for signature in ("translate", "serving_default"):
            out = client.predict({"images": images}, signature)
            np.testing.assert_allclose(out["translations"], model.translate(images), atol=1e-5)


TRAINER_CLASSES = {"GAN", "VAE", "CVAE", "Autoencoder", "SequenceAutoencoder", "Trainer"}


def _class_or_family_tests(path: Path) -> list[str]:
    """``isinstance``/``issubclass`` against a trainer class, and comparisons involving a
    ``family`` (``family == "gan"``, ``meta["family"] in (...)``), in one file (by line).
    Printing the family as a label is not a test, so it is not flagged."""
    found = []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
            "isinstance",
            "issubclass",
        ):
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            if names & TRAINER_CLASSES:
                found.append(f"{where}:{node.lineno} isinstance trainer")
        if isinstance(node, ast.Compare):
            text = ast.unparse(node)
            if "family" in text:
                found.append(f"{where}:{node.lineno} {text}")
    return found


def test_pipeline_tests_no_trainer_class_or_family():
    files = [ROOT / "zoo" / "cli.py", ROOT / "zoo" / "anomaly.py", ROOT / "zoo" / "sampling.py"]
    for folder in ("export", "serving", "recipes"):
        files += sorted((ROOT / folder).rglob("*.py"))
    found = [hit for path in files for hit in _class_or_family_tests(path)]
    assert found == []


def test_the_checker_finds_what_it_looks_for(tmp_path):
    """The search above is not vacuous: it flags the branches this issue removed."""
    sample = tmp_path / "old.py"
    sample.write_text(
        "def f(model, meta):\n"
        "    if isinstance(model, GAN):\n        return 1\n"
        '    if meta["family"] == "vae":\n        return 2\n'
    )
    hits = _class_or_family_tests(sample)
    assert len(hits) == 2  # the isinstance and the comparison
