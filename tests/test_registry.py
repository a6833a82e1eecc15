"""The registry: names, close matches, duplicates, config keys and weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import zoo
from zoo import registry


def test_list_models_filters_with_a_pattern():
    gans = zoo.list_models("*gan*")
    assert {"dcgan", "dcgan_tiny", "wgan_gp"} <= set(gans)
    assert all("gan" in name for name in gans) and "vae" not in gans
    assert "conv_ae_tiny" not in zoo.list_models(include_tiny=False)
    assert zoo.list_models() == sorted(zoo.list_models())


def test_unknown_model_lists_close_matches():
    with pytest.raises(zoo.UnknownModelError, match=r"unknown model 'dcgn'\. Did you mean 'dcgan'"):
        zoo.load("dcgn")
    with pytest.raises(KeyError):  # still a KeyError for callers that catch that
        zoo.load("no_such_model_at_all")


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="'dcgan' is already registered"):

        @registry.register("dcgan", family="gan", description="again")
        def another_dcgan():  # pragma: no cover - never built
            return None

    assert registry.get_spec("dcgan").builder.__name__ == "dcgan"


def test_unknown_config_key_names_the_accepted_keys():
    with pytest.raises(
        zoo.ConfigError, match=r"'latent' \(did you mean 'latent_dim'\?\).*accepted keys"
    ):
        zoo.load("vae", latent=3)


def test_tiny_variants_share_the_builder_with_small_defaults():
    tiny, full = zoo.load("vae_tiny"), zoo.load("vae")
    assert type(tiny) is type(full)
    assert tiny.latent_dim == 4 and full.latent_dim == 16
    assert tiny.count_params() < full.count_params() / 10
    assert zoo.load("vae_tiny", latent_dim=6).latent_dim == 6  # user config wins over tiny


def test_load_with_weights_from_keras_file_and_weights_h5(tmp_path, digits):
    model = zoo.load("conv_ae_tiny")
    model.compile()
    model.fit(digits, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    from_keras = zoo.load("conv_ae_tiny", weights=str(tmp_path / "m.keras"))
    from_h5 = zoo.load("conv_ae_tiny", weights=str(tmp_path / "m.weights.h5"))
    for other in (from_keras, from_h5):
        np.testing.assert_array_equal(other.reconstruct(digits[:4]), model.reconstruct(digits[:4]))
    with pytest.raises(zoo.ConfigError, match="carries its own config"):
        zoo.load("conv_ae_tiny", weights=str(tmp_path / "m.keras"), latent_dim=3)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        zoo.load("conv_ae_tiny", weights=str(tmp_path / "missing"))


def test_loaded_model_is_plain_keras():
    model = zoo.load("dcgan_tiny")
    assert isinstance(model, keras.Model) and model.built
    model.compile(
        generator_optimizer=keras.optimizers.Adam(1e-4), discriminator_optimizer="rmsprop"
    )
    assert isinstance(model.discriminator_optimizer, keras.optimizers.RMSprop)
    assert float(model.generator_optimizer.learning_rate) == pytest.approx(1e-4)


def test_a_saved_model_loads_in_a_fresh_process_the_two_documented_ways(tmp_path):
    """README: zoo.load_run(path), or keras.saving.load_model after
    zoo.registry.load_model_modules(); memory_ae has a custom layer as well as a trainer."""
    model = zoo.load("memory_ae_tiny")
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    path = tmp_path / "ae.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        x = np.load({str(tmp_path / "x.npy")!r})
        if sys.argv[1] == "runs":
            import zoo
            model = zoo.load_run({str(path)!r})
        else:
            import keras
            import zoo.registry
            zoo.registry.load_model_modules()
            model = keras.saving.load_model({str(path)!r})
        print(" ".join(repr(float(v)) for v in np.asarray(model.anomaly_score(x))))
        """
    )
    want = np.asarray(model.anomaly_score(x))
    for way in ("runs", "keras"):
        done = subprocess.run(
            [sys.executable, "-c", script, way], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        got = np.array([float(v) for v in done.stdout.split()])
        np.testing.assert_allclose(got, want, rtol=1e-6)
