"""The image-to-image models walk the user's path: a recipe trains each tiny model on a bundled
task with TensorBoard grids of source | output | target, ``zoo evaluate --task translation``
and ``zoo sample`` read the run's held-out pairs, ``zoo export`` checks parity (SavedModel, the
TF1 loader, ONNX), super-resolution takes any image size, and one ``zoo serve`` answers REST
requests for all three. No code under export/, serving/ or recipes/ names these models."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
from export_helpers import run_tf1_session, zoo_serve
from PIL import Image

import zoo
from zoo.data import pairs
from zoo.metrics import image_quality as iq

#: (recipe name, model, [model_config] body, [data] body): one per bundled task.
TASKS = {
    "p2p": (
        "pix2pix_tiny",
        "source_shape = [32, 32, 1]\ntarget_shape = [32, 32, 1]",
        'source = "bundled"\nname = "edges2digits"\nbatch_size = 8',
    ),
    "cycle": (
        "cyclegan_tiny",
        "image_shape = [32, 32, 1]",
        'source = "bundled"\nname = "digits2animals"\nbatch_size = 4',
    ),
    "sr": (
        "srresnet_tiny",
        "channels = 1\npatch_size = 32",
        'source = "bundled"\nname = "photos_x4"\nbatch_size = 4\nflip = true',
    ),
}


def _recipe(key: str) -> str:
    model, config, data = TASKS[key]
    return (
        f'name = "{key}"\nmodel = "{model}"\nseed = 1\nepochs = 1\n\n[model_config]\n{config}\n\n'
        f"[data]\n{data}\n\n[training]\nsteps_per_epoch = 2\nverbose = 0\n\n"
        "[logging]\nnum_samples = 8\nsample_every_epochs = 1\n"
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from zoo.recipes import train

    root = tmp_path_factory.mktemp("translation_runs")
    out = {}
    for key in TASKS:
        recipe = root / f"{key}.toml"
        recipe.write_text(_recipe(key))
        out[key] = train(recipe, logdir=root / "runs").run_dir
    return out


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    from zoo.export import export_cli

    models = tmp_path_factory.mktemp("translation_models")
    return models, {key: export_cli(run, models, name=key) for key, run in runs.items()}


def _grid_tiles(path) -> tuple[int, int]:
    """(rows, columns) of a grid PNG of 32x32 tiles with 1-pixel gaps."""
    height, width = np.asarray(Image.open(path)).shape[:2]
    return (height + 1) // 33, (width + 1) // 33


def test_runs_log_rows_of_source_output_target(runs):
    for key, run in runs.items():
        grid = run / "samples" / "translations_epoch001.png"
        assert grid.is_file(), key
        # 8 held-out pairs, 3 images each (unpaired: a, G(a), F(G(a)) and b, F(b), G(F(b)))
        assert _grid_tiles(grid) == ((8 if key != "cycle" else 16) * 3 // 6, 6), key
        events = list((run / "train").glob("events.out.tfevents.*"))
        tags = {
            v.tag
            for e in events
            for record in tf.data.TFRecordDataset(str(e))
            for v in tf.compat.v1.Event.FromString(record.numpy()).summary.value
        }
        assert "translations" in tags, (key, tags)


def test_zoo_evaluate_scores_held_out_pairs_against_the_baseline(runs, tmp_path):
    from zoo.recipes.evaluation import evaluate_translation_run

    from zoo.cli import main

    metrics, out = evaluate_translation_run(runs["p2p"], n=40, out_dir=tmp_path / "p2p")
    held = pairs.bundled_task("edges2digits", "test", source_shape=(32, 32, 1))
    spread = held.shard(25, 0)  # 40 of the 1,000 held-out pairs, evenly spaced
    outlines, digits = (np.stack(x) for x in zip(*spread.as_numpy_iterator(), strict=True))
    assert metrics["identity"]["l1"] == pytest.approx(float(np.mean(iq.l1(outlines, digits))))
    model = zoo.load_run(runs["p2p"])
    want = iq.paired_report(np.asarray(model.translate(outlines)), digits)
    assert metrics["model"]["psnr"] == pytest.approx(want["psnr"], rel=1e-5)
    assert "| identity |" in (out / "report.md").read_text()
    assert (out / "translations.png").is_file()

    metrics, _ = evaluate_translation_run(runs["sr"], n=10, out_dir=tmp_path / "sr")
    assert metrics["scored_on"] == "all channels, 4-pixel border cropped"  # grey photos
    assert set(metrics) == {"model", "bicubic", "scored_on"} and metrics["bicubic"]["n"] == 10
    assert 15 < metrics["bicubic"]["psnr"] < 40  # bicubic x4 on real photographs

    code = main(["evaluate", str(runs["cycle"]), "--task", "translation", "--n", "8",
                 "--out", str(tmp_path / "cycle")])  # fmt: skip
    assert code == 0
    report = (tmp_path / "cycle" / "report.md").read_text()
    assert re.search(r"\| cycle L1 \| \d\.\d{4} \| \d\.\d{4} \|", report)


def test_zoo_sample_draws_held_out_rows(runs, tmp_path):
    from zoo.cli import main

    out = tmp_path / "rows.png"
    assert main(["sample", str(runs["p2p"]), "--n", "12", "--out", str(out)]) == 0
    assert _grid_tiles(out) == (2, 6)  # 4 held-out pairs: 4 rows of 3, 6 per grid row


def test_export_parity_and_tf1_loader(runs, exported):
    _, results = exported
    for key, result in results.items():
        parity = result.metadata["parity"]
        assert parity["passed"] and set(parity["backends"]) == {
            "savedmodel", "tf1_session", "onnxruntime",
        }, key  # fmt: skip
    assert set(results["cycle"].onnx_paths) == {"translate_a_to_b", "translate_b_to_a"}
    assert results["cycle"].metadata["serving_default"] == "translate_a_to_b"
    model = zoo.load_run(runs["cycle"])
    digits = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    keys, out = run_tf1_session(results["cycle"].version_dir, lambda names: {"images": digits})
    assert keys == ["serving_default", "translate_a_to_b", "translate_b_to_a"]
    np.testing.assert_allclose(
        out["translate_b_to_a"][1]["translations"], model.translate_b_to_a(digits), atol=1e-5
    )


def test_upscale_takes_any_size_in_every_backend(runs, exported):
    _, results = exported
    result, model = results["sr"], zoo.load_run(runs["sr"])
    assert result.metadata["model"]["input"]["shape"] == [None, None, None, 1]
    loaded = tf.saved_model.load(str(result.version_dir))
    session = ort.InferenceSession(str(result.onnx_paths["upscale"]))
    for h, w in ((8, 8), (5, 11)):
        lr = np.random.default_rng(h).uniform(size=(2, h, w, 1)).astype(np.float32)
        want = np.asarray(model.upscale(lr))
        assert want.shape == (2, 4 * h, 4 * w, 1)
        got = loaded.signatures["upscale"](images=tf.constant(lr))["upscaled"].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
        (onnx_out,) = session.run(None, {"images": lr})
        np.testing.assert_allclose(onnx_out, want, atol=1e-4)


def test_zoo_serve_answers_every_translator_over_rest(runs, exported, tmp_path):
    from zoo.serving.client import ServingClient, ServingError

    models, _ = exported
    with zoo_serve({key: models / key for key in TASKS}, tmp_path) as (url, _):
        rng = np.random.default_rng(2)
        digits = rng.uniform(size=(2, 32, 32, 1)).astype(np.float32)
        cycle, sr = zoo.load_run(runs["cycle"]), zoo.load_run(runs["sr"])
        client = ServingClient(url, model="cycle")
        for signature, method in (("translate_a_to_b", cycle.translate_a_to_b),
                                  ("translate_b_to_a", cycle.translate_b_to_a)):  # fmt: skip
            got = client.predict({"images": digits}, signature)["translations"]
            np.testing.assert_allclose(got, method(digits), atol=1e-5)
        lr = rng.uniform(size=(1, 6, 9, 1)).astype(np.float32)
        got = ServingClient(url, model="sr").predict({"images": lr}, "upscale")["upscaled"]
        np.testing.assert_allclose(got, sr.upscale(lr), atol=1e-5)
        with pytest.raises(ServingError, match="images"):  # 28x28 into a 32x32 model
            ServingClient(url, model="p2p").predict({"images": digits[:, :28, :28]}, "translate")


@pytest.mark.parametrize("name", ["pix2pix_tiny", "cyclegan_tiny", "srresnet_tiny"])
def test_fit_refuses_0_255_targets_before_training(name):
    from zoo.data import DataError

    model = zoo.load(name)
    model.compile()
    source_shape, target_shape = zoo.tasks.declaration_of(model).pair_shapes
    rng = np.random.default_rng(0)
    source = rng.uniform(size=(4, *source_shape)).astype(np.float32)
    target = rng.uniform(size=(4, *target_shape)).astype(np.float32)
    for given in (target * 255, tf.data.Dataset.from_tensor_slices((source, target * 255))):
        args = (source, given) if isinstance(given, np.ndarray) else (given.batch(4),)
        with pytest.raises(DataError, match=r"fit\(targets\): .* divide by 255"):
            model.fit(*args, epochs=1, verbose=0)
    assert int(model.optimizers[next(iter(model.optimizers))].iterations) == 0
