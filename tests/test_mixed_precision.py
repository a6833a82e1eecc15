"""Mixed precision (issue 16 §3) and synchronized batch norm (§1): zoo.precision's policy
switch, float32 network outputs, training of each family under mixed_float16 and
mixed_bfloat16 (finite, decreasing losses; loss scaling for float16), float32 exports of
a model trained in bfloat16, batch-norm statistics over the global batch on 2 replicas,
and ``.keras`` files saved before these changes still loading."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import zoo
from zoo import networks
from zoo.distribute import make_strategy
from zoo.precision import (
    PRECISIONS,
    check_precision,
    compute_dtype,
    current_precision,
    float32_compute,
    precision,
    set_precision,
)

MIXED = ("mixed_float16", "mixed_bfloat16")
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def policy_is_restored():
    """No test leaves a mixed policy behind for the next one in this process."""
    assert current_precision() == "float32"
    yield
    assert current_precision() == "float32"


# -- the policy switch -----------------------------------------------------------------
def test_precision_context_sets_and_restores_the_policy_even_on_error():
    assert PRECISIONS == ("float32", "mixed_float16", "mixed_bfloat16")
    with precision("mixed_bfloat16"):
        assert keras.mixed_precision.dtype_policy().compute_dtype == "bfloat16"
        assert layers.Dense(2).compute_dtype == "bfloat16"
        assert layers.Dense(2).variable_dtype == "float32"
    with pytest.raises(RuntimeError, match="inside"), precision("mixed_float16"):
        assert current_precision() == "mixed_float16"
        raise RuntimeError("inside")
    assert layers.Dense(2).compute_dtype == "float32"


def test_a_bad_precision_names_the_choices():
    for bad in ("float16", "bf16", ""):
        with pytest.raises(ValueError, match="float32, mixed_float16, mixed_bfloat16"):
            set_precision(bad)
        with pytest.raises(ValueError, match=f"unknown precision {bad!r}"):
            check_precision(bad)
    assert current_precision() == "float32"
    assert [check_precision(name) for name in PRECISIONS] == list(PRECISIONS)


def test_every_network_outputs_float32_under_a_mixed_policy():
    """Every registered model (tiny), so a future one is covered by construction: its
    networks' outputs are float32 while their hidden layers compute in bfloat16."""
    with precision("mixed_bfloat16"):
        for name in zoo.list_models("*_tiny"):
            model = zoo.load(name)
            for role in type(model).NETWORKS:
                network = getattr(model, role)
                dtypes = [str(t.dtype) for t in network.outputs]
                assert dtypes == ["float32"] * len(dtypes), (name, role, dtypes)
            assert compute_dtype([model]) == "bfloat16", name


def test_memory_module_and_batch_norm_layers():
    with precision("mixed_float16"):
        memory = zoo.load("memory_ae_tiny").decoder.get_layer("memory")
        assert memory.compute_dtype == "float32"
        generator = zoo.load("dcgan_tiny").generator
    norms = [la for la in generator.layers if isinstance(la, layers.BatchNormalization)]
    assert norms and all(la.synchronized for la in norms)


# -- training under a mixed policy -------------------------------------------------------
#: name -> the tracker that must decrease over 20 steps (a GAN's critic loss falls first).
FAMILIES = {
    "dcgan_tiny": "d_loss",
    "cgan_tiny": "d_loss",
    "vae_tiny": "loss",
    "mlp_vae_tiny": "loss",
    "iwae_tiny": "loss",
    "conv_ae_tiny": "loss",
    "sparse_ae_tiny": "loss",
    "contractive_ae_tiny": "loss",
    "denoising_ae_tiny": "loss",
    "recurrent_ae_tiny": "loss",
}


def train_20_steps(name: str, policy: str, digits, digit_labels) -> tuple[keras.Model, dict]:
    """20 steps (5 epochs of 4 batches of 8) on a fixed batch of real data under ``policy``."""
    with precision(policy):
        keras.utils.set_random_seed(0)
        model = zoo.load(name)
        model.compile()
        if name.startswith("recurrent"):
            x = zoo.data.synthetic_series(32, 32, 3, anomaly_fraction=0.0, seed=0).series
            data = (x,)
        elif getattr(model, "num_classes", 0):
            data = (digits, digit_labels)
        else:
            data = (digits,)
        history = model.fit(*data, batch_size=8, epochs=5, shuffle=False, verbose=0).history
    return model, history


@pytest.mark.parametrize("policy", MIXED)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_trains_under_a_mixed_policy(name, policy, digits, digit_labels):
    model, history = train_20_steps(name, policy, digits, digit_labels)
    for key, values in history.items():
        assert np.all(np.isfinite(values)), (key, values)
    falling = history[FAMILIES[name]]
    assert falling[-1] < falling[0], (FAMILIES[name], falling)
    scaled = [isinstance(o, keras.optimizers.LossScaleOptimizer) for o in model.optimizers.values()]
    # float16 needs loss scaling, one LossScaleOptimizer per role (both GAN players);
    # bfloat16 has float32's exponent range and none
    assert scaled == [policy == "mixed_float16"] * len(scaled), model.optimizers
    if name == "dcgan_tiny":
        assert len(scaled) == 2


# -- exports -------------------------------------------------------------------------------
def bfloat16_ops(saved_model: Path) -> list[str]:
    """Nodes of the SavedModel's graphs and functions with a bfloat16 attribute."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((saved_model / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return [
        node.name
        for node in nodes
        for value in node.attr.values()
        if value.type == tf.bfloat16.as_datatype_enum
        or tf.bfloat16.as_datatype_enum in value.list.type
    ]


def test_a_model_trained_in_bfloat16_exports_float32_signatures(tmp_path, digits):
    from zoo.export import export_model

    model, _ = train_20_steps("vae_tiny", "mixed_bfloat16", digits, None)
    with precision("mixed_bfloat16"):
        result = export_model(
            model, tmp_path, "vae", formats=["savedmodel", "onnx"], warmup=False,
            threshold=100.0,
        )  # fmt: skip
    assert result.metadata["parity"]["passed"]
    assert sorted(result.onnx_paths)  # a bfloat16 graph would not convert to ONNX
    assert bfloat16_ops(result.version_dir) == []
    assert model.encoder.get_layer(index=1).compute_dtype == "bfloat16"  # restored
    loaded = tf.saved_model.load(str(result.version_dir))
    inputs = {
        "images": tf.constant(digits[:3]),
        "z": tf.constant(np.random.default_rng(0).normal(size=(3, 4)), tf.float32),
        "seed": tf.constant([1, 2, 3], tf.int64),
        "threshold": tf.constant([100.0] * 3),
    }
    allowed = {tf.float32, tf.int64, tf.bool}
    for key, function in loaded.signatures.items():
        specs = function.structured_input_signature[1]
        assert {s.dtype for s in specs.values()} <= allowed, key
        outputs = function(**{k: inputs[k] for k in specs})
        assert {v.dtype for v in outputs.values()} <= allowed, key
        for value in outputs.values():
            assert np.all(np.isfinite(value.numpy())), key
    # the export computes what the trained model computes in float32
    with float32_compute([model]):
        expected = np.asarray(model.reconstruct(digits[:3]))
    got = loaded.signatures["reconstruct"](images=tf.constant(digits[:3]))["reconstructions"]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


# -- synchronized batch norm on 2 logical devices ---------------------------------------------
def moving_statistics(build, images: np.ndarray, strategy=None) -> list[np.ndarray]:
    """Moving means and variances of the BN layers of ``build()`` after one training-mode
    pass over ``images`` (split across the strategy's replicas when given)."""
    if strategy is None:
        network = build()
        network(images, training=True)
    else:
        with strategy.scope():
            network = build()
        batches = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(images).batch(len(images))
        )
        step = tf.function(lambda x: network(x, training=True))
        for batch in batches:
            strategy.run(step, args=(batch,))
    norms = [la for la in network.layers if isinstance(la, layers.BatchNormalization)]
    assert norms
    return [np.asarray(v) for la in norms for v in (la.moving_mean, la.moving_variance)]


def test_synchronized_batch_norm_uses_the_global_batch(digits, monkeypatch):
    """2 replicas at global batch 16 update the moving statistics as 1 device at batch
    16; unsynchronized batch norm (per-replica statistics) does not; with no strategy the
    synchronized layer is plain batch norm."""
    # the zoo's mirrored strategy: one per process, so test files sharing a process agree
    strategy = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    images = digits[:16] * np.linspace(0.2, 1.8, 16, dtype="float32")[:, None, None, None]

    def build():
        return networks.conv_encoder(
            (28, 28, 1), 4, (4, 8), batch_norm=True, convs_per_stage=2, seed=3
        )

    one_device = moving_statistics(build, images)
    mirrored = moving_statistics(build, images, strategy)
    for single, replicated in zip(one_device, mirrored, strict=True):
        np.testing.assert_allclose(replicated, single, rtol=1e-5, atol=1e-7)

    monkeypatch.setattr(networks, "sync_batch_norm", layers.BatchNormalization)
    plain = moving_statistics(build, images)
    for sync, unsync in zip(one_device, plain, strict=True):
        np.testing.assert_allclose(sync, unsync, rtol=1e-5, atol=1e-7)
    per_replica = moving_statistics(build, images, strategy)
    assert not all(
        np.allclose(a, b, rtol=1e-3) for a, b in zip(one_device, per_replica, strict=True)
    )


# -- files saved before issue 16 ---------------------------------------------------------------
def test_a_keras_file_saved_before_mixed_precision_still_loads(digits):
    """``dcgan_tiny.keras`` was saved by the zoo before networks had float32 outputs and
    synchronized batch norm: it loads as saved, and its weights load into today's build."""
    path = DATA / "dcgan_tiny_before_issue16.keras"
    old = zoo.load("dcgan", weights=str(path))
    norms = [la for la in old.generator.layers if isinstance(la, layers.BatchNormalization)]
    assert norms and not any(la.synchronized for la in norms)
    new = zoo.load("dcgan_tiny")
    new.set_weights(old.get_weights())
    z = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    np.testing.assert_allclose(new.generate(z), old.generate(z), atol=1e-6)
