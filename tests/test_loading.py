"""Issue 13 (items 3, 4, 6, 7, 8, 11): config checks at the registry, loading weights
checks the model, run folders load with their own config, `import zoo` is free of
TensorFlow and its submodules load on first use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from zoo.recipes import RecipeError, load_recipe

import zoo
from zoo import registry

RUN_RECIPE = """
name = "{name}"
model = "{model}"
seed = 1
epochs = 1

[model_config]
latent_dim = {latent_dim}

[data]
source = "sample"
batch_size = 32
validation_split = ""

[training]
steps_per_epoch = 2
verbose = 0

[logging]
num_samples = 0
latent_every_epochs = 0
"""


def run_python(script: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter (nothing imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- item 3 / 11: configs are checked at the registry ---------------------------------------
@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("vae_tiny", {"latent_dim": 0}, "latent_dim must be a positive integer; got 0"),
        ("dcgan_tiny", {"latent_dim": -3}, "latent_dim must be a positive integer; got -3"),
        ("conv_ae_tiny", {"latent_dim": 2.5}, "latent_dim must be a positive integer"),
        ("conv_ae_tiny", {"filters": [4, 0]}, "filters must be a non-empty list of positive"),
        ("mlp_vae_tiny", {"hidden": [16, -1]}, "hidden must be a list of positive integers"),
        ("vae_tiny", {"image_shape": [28, 28]}, "image_shape must be (height, width, channels)"),
        ("recurrent_ae_tiny", {"units": 0}, "units must be a positive integer"),
        ("gan_tiny", {"label_smoothing": 1.5}, "label_smoothing must be a probability in [0, 1)"),
        ("dcgan_tiny", {"ema_decay": 1.0}, "ema_decay must be in (0, 1) or None; got 1.0"),
        ("sparse_ae_tiny", {"sparsity_target": 0.0}, "sparsity_target must be a probability"),
        ("iwae_tiny", {"k": 0}, "k must be an integer, at least 1 (samples per example); got 0"),
        # 30 halves once (to 15) but not twice: two filters need a size divisible by 4
        ("vae_tiny", {"image_shape": [30, 30, 1]}, "cannot be halved 2 times"),
        ("dcgan_tiny", {"image_shape": [27, 27, 1], "filters": None}, "cannot be halved 1 times"),
    ],
)
def test_bad_configs_are_refused_naming_key_value_and_what_is_allowed(name, config, message):
    with pytest.raises(zoo.ConfigError) as caught:
        zoo.load(name, **config)
    text = str(caught.value)
    assert message in text and text.startswith(f"model {name!r}") and "\n" not in text
    with pytest.raises(zoo.ConfigError):  # the same check without building anything
        registry.resolve_config(name, config)


def test_good_edge_configs_still_build():
    assert zoo.load("vae_tiny", image_shape=(32, 32, 3)).image_shape == (32, 32, 3)
    assert zoo.load("cgan_tiny", architecture="mlp", filters=(16,)).latent_dim == 8
    assert zoo.load("dcgan_tiny", ema_decay=None, seed=None).latent_dim == 8


def test_a_builder_value_error_is_a_config_error_too():
    # the builder's own cross-checks (latent size vs input size) reach callers as ConfigError
    with pytest.raises(zoo.ConfigError, match=r"model 'dense_ae': .*latent_dim < input size"):
        zoo.load("dense_ae", latent_dim=1000)


def test_a_recipe_with_a_bad_model_config_is_refused_when_read(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RUN_RECIPE.format(name="r", model="vae_tiny", latent_dim=0))
    with pytest.raises(RecipeError, match=r"\[model_config\]: model 'vae_tiny': latent_dim"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="latent_dim must be a positive integer; got -3"):
        load_recipe("vae_mnist", ["model_config.latent_dim=-3"])


def test_cli_refuses_negative_latent_dim_in_one_line_without_tensorflow(tmp_path):
    done = run_python(
        f"""
        import sys
        from zoo.cli import main
        rc = main(["train", "vae_mnist", "--set", "model_config.latent_dim=-3",
                   "--logdir", {str(tmp_path)!r}])
        print(rc, "tensorflow" in sys.modules)
        """
    )
    assert done.stdout.split() == ["2", "False"], done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "zoo train: error: [model_config]: model 'vae': latent_dim must be a positive "
        "integer; got -3"
    ]
    assert not any(tmp_path.iterdir())  # no run folder


# -- items 4, 6, 7, 8: loading ---------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """.keras files of a tiny DCGAN and a tiny VAE."""
    folder = tmp_path_factory.mktemp("saved")
    paths = {}
    for name in ("dcgan_tiny", "vae_tiny"):
        paths[name] = folder / f"{name}.keras"
        zoo.load(name).save(paths[name])
    return paths


def test_load_refuses_weights_saved_from_another_model(saved):
    with pytest.raises(
        zoo.ConfigError, match=r"holds a 'dcgan' model \(family gan\), not 'vae' \(family vae\)"
    ):
        zoo.load("vae", weights=str(saved["dcgan_tiny"]))
    with pytest.raises(zoo.ConfigError, match="not 'wgan'"):  # same family, another builder
        zoo.load("wgan", weights=str(saved["dcgan_tiny"]))
    # a model and its _tiny variant are one builder: interchangeable
    assert zoo.load("vae", weights=str(saved["vae_tiny"])).latent_dim == 4


def test_load_keras_file_in_a_fresh_process(saved):
    """zoo.load(NAME, weights=own.keras) as the first thing a new process does."""
    done = run_python(
        f"""
        import zoo
        model = zoo.load("dcgan", weights={str(saved["dcgan_tiny"])!r})
        print(type(model).__name__, model.latent_dim)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["GAN", "8"]


def test_readme_line_import_zoo_then_zoo_registry_in_a_fresh_process(saved):
    """`import zoo; zoo.registry.load_model_modules()` (README), and `import zoo` stays
    free of TensorFlow until a model is needed."""
    done = run_python(
        f"""
        import sys
        import zoo
        assert "tensorflow" not in sys.modules, "import zoo imported tensorflow"
        names = zoo.registry.list_models("dcgan*")
        spec = zoo.registry.get_spec("vae")
        assert "tensorflow" not in sys.modules, "listing models imported tensorflow"
        assert zoo.recipes.load_recipe("vae_mnist").model == "vae"
        assert "tensorflow" not in sys.modules, "reading a recipe imported tensorflow"
        zoo.registry.load_model_modules()
        import keras
        model = keras.saving.load_model({str(saved["vae_tiny"])!r})
        print(" ".join(names), spec.family, type(model).__name__, zoo.load_run.__module__)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["dcgan", "dcgan_tiny", "vae", "VAE", "zoo.recipes.runs"]


def test_unknown_attribute_of_zoo_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        zoo.no_such_thing  # noqa: B018


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    """A one-epoch run of vae_tiny with model_config.latent_dim = 3 (not the default 4)."""
    from zoo.recipes import train

    folder = tmp_path_factory.mktemp("runs")
    path = folder / "vae3.toml"
    path.write_text(RUN_RECIPE.format(name="vae3", model="vae_tiny", latent_dim=3))
    return train(path, logdir=folder).run_dir


def test_load_from_a_run_folder_uses_the_runs_config(vae_run, digits):
    from zoo.recipes.runs import load_run

    trained = load_run(vae_run)  # model.keras
    for weights in (vae_run, vae_run / "checkpoints", vae_run / "checkpoints" / "ckpt-1"):
        model = zoo.load("vae_tiny", weights=str(weights))
        assert model.latent_dim == 3
        np.testing.assert_allclose(
            np.asarray(model.encode(digits[:4])), np.asarray(trained.encode(digits[:4])), atol=1e-6
        )
    assert zoo.load("vae", weights=str(vae_run)).latent_dim == 3  # the run's model is built
    with pytest.raises(
        zoo.ConfigError, match=r"holds a 'vae_tiny' model \(family vae\), not 'dcgan'"
    ):
        zoo.load("dcgan", weights=str(vae_run))


def test_load_run_without_model_keras_takes_the_same_path(vae_run, tmp_path, digits):
    import shutil

    from zoo.recipes.runs import load_run

    copy = tmp_path / "copy"
    shutil.copytree(vae_run, copy)
    (copy / "model.keras").unlink()
    model = load_run(copy)  # rebuilt from recipe.toml + the last checkpoint
    assert model.latent_dim == 3
    np.testing.assert_allclose(
        np.asarray(model.encode(digits[:2])),
        np.asarray(load_run(vae_run).encode(digits[:2])),
        atol=1e-6,
    )


# -- the registry reads its metadata from source ------------------------------------------
def test_metadata_read_from_source_matches_the_imported_builders():
    import inspect

    registry.load_model_modules()
    for name in registry.list_models():
        spec = registry.get_spec(name)
        builder = spec.builder
        signature = inspect.signature(builder).parameters.items()
        want = {k: p.default for k, p in signature if p.default is not inspect.Parameter.empty}
        assert spec.defaults() == want, name
        read = registry._read_module(spec.module)
        assert read is not None, f"{spec.module}: @register arguments must be literals"
        (from_source,) = [s for s in read if s.name == name]
        assert from_source == spec, name  # family, description, paper, tiny, parameters
