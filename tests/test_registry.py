"""The registry: names, close matches, duplicates, config keys and weights."""

from __future__ import annotations

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
