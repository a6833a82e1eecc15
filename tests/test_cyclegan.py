"""CycleGAN (Zhu et al., 2017) against its paper: the ResNet generator and its reflection
padding and instance norm, the 50-image history, the linear decay of the learning rate,
the joint generator objective (LSGAN + 10 cycle + 5 identity), the halved discriminator
objective, and four optimizers that each move their own network (the two generators at
the same point, as one Adam over both would)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.models.cyclegan import build_cyclegan
from zoo.trainers.adversarial import to_signed
from zoo.trainers.cyclegan import CycleGAN
from zoo.translation.image_pool import ImagePool
from zoo.translation.resnet import ReflectionPadding2D, build_resnet_generator, instance_norm
from zoo.translation.schedules import LinearDecay

SHAPE = (32, 32, 1)
TINY = {"image_shape": SHAPE, "filters": 4, "n_blocks": 1, "patch_layers": 2}


def tiny(**overrides) -> CycleGAN:
    return build_cyclegan(**{**TINY, "seed": 3, **overrides})


@pytest.fixture(scope="module")
def domains() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(4, *SHAPE)).astype("float32")
    b = (rng.uniform(size=(4, *SHAPE)) ** 3).astype("float32")
    return a, b


def uniform_draws(seed: int):
    generator = keras.random.SeedGenerator(seed)
    return lambda shape: keras.random.uniform(shape, seed=generator)


# -- networks --------------------------------------------------------------------------------
def test_resnet_generator_keeps_the_shape_and_maps_into_tanh_range():
    generator = build_resnet_generator((16, 24, 3), filters=4, n_blocks=2, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype("float32")
    y = generator(x).numpy()
    assert y.shape == (2, 16, 24, 3) and y.dtype == np.float32
    assert np.all(np.abs(y) <= 1.0)
    widths = [layer.filters for layer in generator.layers if hasattr(layer, "filters")]
    # c7s1-4, d8, d16, 2 blocks of two R16 convs, u8, u4, c7s1-3
    assert widths == [4, 8, 16, 16, 16, 16, 16, 8, 4, 3]
    same = build_resnet_generator((16, 24, 3), filters=4, n_blocks=2, seed=0)
    np.testing.assert_array_equal(same(x), y)  # seeded
    with pytest.raises(ValueError, match="multiples of 4"):
        build_resnet_generator((30, 32, 3), filters=4, n_blocks=1)


def test_reflection_padding_mirrors_without_repeating_the_border():
    row = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 1, 4, 1)
    image = np.tile(row, (1, 3, 1, 1)) + 10 * np.arange(3, dtype="float32").reshape(1, 3, 1, 1)
    out = ReflectionPadding2D(2)(image).numpy()
    assert out.shape == (1, 7, 8, 1)
    np.testing.assert_array_equal(out[0, 2, :, 0], [3, 2, 1, 2, 3, 4, 3, 2])  # no edge repeat
    np.testing.assert_array_equal(out[0, :, 2, 0], [21, 11, 1, 11, 21, 11, 1])
    np.testing.assert_array_equal(out, np.pad(image, [(0, 0), (2, 2), (2, 2), (0, 0)], "reflect"))
    layer = ReflectionPadding2D.from_config(ReflectionPadding2D((1, 3)).get_config())
    assert layer.padding == (1, 3)
    assert layer.compute_output_shape((None, None, 5, 2)) == (None, None, 11, 2)


def test_instance_norm_normalises_each_channel_of_each_image():
    rng = np.random.default_rng(1)
    scale = np.array([1.0, 5.0, 0.5], "float32")
    x = (rng.normal(3.0, 1.0, (2, 6, 5, 3)) * scale + [[[[-4, 0, 9]]]]).astype("float32")
    x[1] *= 7.0  # another image, other statistics
    y = instance_norm()(x).numpy()  # scale 1, offset 0 at init
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, rtol=1e-3)
    manual = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(
        x.var(axis=(1, 2), keepdims=True) + 1e-5
    )
    np.testing.assert_allclose(y, manual, atol=1e-4)


# -- the history pool --------------------------------------------------------------------------
def constant_images(values) -> np.ndarray:
    return np.broadcast_to(
        np.asarray(values, "float32")[:, None, None, None], (len(values), 2, 2, 1)
    ).copy()


def test_pool_returns_its_inputs_while_filling_and_holds_at_most_pool_size():
    pool = ImagePool((2, 2, 1), pool_size=5)
    draw = uniform_draws(0)
    first = constant_images([1, 2, 3])
    np.testing.assert_array_equal(pool.query(first, draw), first)
    assert int(pool.count.numpy()) == 3
    np.testing.assert_array_equal(pool.images.numpy()[:3, 0, 0, 0], [1, 2, 3])
    second = constant_images([4, 5, 6, 7, 8, 9])
    out = pool.query(second, draw).numpy()
    np.testing.assert_array_equal(out[:2], second[:2])  # the last two free slots
    assert int(pool.count.numpy()) == 5
    stored = set(pool.images.numpy()[:, 0, 0, 0].tolist())
    assert stored <= set(range(1, 10)) and len(stored) == 5
    # each image is returned as it is or swapped for one stored before it (a smaller value)
    assert np.all(out[:, 0, 0, 0] <= second[:, 0, 0, 0])
    assert set(out[:, 0, 0, 0].tolist()) <= set(range(1, 10))
    off = ImagePool((2, 2, 1), pool_size=0)
    np.testing.assert_array_equal(off.query(second, draw), second)


def test_pool_swaps_half_of_the_images_once_full():
    pool = ImagePool((2, 2, 1), pool_size=50)
    draw = uniform_draws(7)
    pool.query(constant_images(np.arange(50) - 100.0), draw)  # fill
    new = constant_images(np.arange(400, dtype="float32"))
    out = pool.query(new, draw).numpy()[:, 0, 0, 0]
    swapped = out != new[:, 0, 0, 0]
    # Binomial(400, 1/2): sd 0.025; 4 sd either side
    assert abs(swapped.mean() - 0.5) < 0.1, swapped.mean()
    # a swapped image comes from the pool: an old one or a newer one of this batch
    assert np.all((out[swapped] < 0) | (out[swapped] < np.arange(400)[swapped]))
    assert int(pool.count.numpy()) == 50


# -- the schedule ---------------------------------------------------------------------------
def test_linear_decay_holds_then_falls_linearly_to_zero():
    schedule = LinearDecay(2e-4, decay_steps=200)
    assert schedule.hold_steps == 100
    values = [float(schedule(step)) for step in (0, 100, 150, 175, 200, 300)]
    np.testing.assert_allclose(values, [2e-4, 2e-4, 1e-4, 5e-5, 0.0, 0.0], rtol=1e-6)
    explicit = LinearDecay(1.0, decay_steps=10, hold_steps=6)
    np.testing.assert_allclose([float(explicit(s)) for s in (5, 6, 8, 10)], [1, 1, 0.5, 0])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(explicit))
    assert isinstance(restored, LinearDecay) and restored.get_config() == explicit.get_config()
    with pytest.raises(ValueError, match="hold_steps"):
        LinearDecay(1.0, decay_steps=10, hold_steps=11)


# -- the objectives -----------------------------------------------------------------------------
def test_joint_generator_objective_is_lsgan_plus_ten_cycle_plus_five_identity(domains):
    model = tiny()
    a, b = (to_signed(x) for x in domains)  # numpy in, numpy out
    values = model.generator_objective(a, b, training=False)
    g, f = model.generator_ab, model.generator_ba
    fake_b, fake_a = g(a).numpy(), f(b).numpy()
    adv_ab = np.mean((model.discriminator_b(fake_b).numpy() - 1.0) ** 2)
    adv_ba = np.mean((model.discriminator_a(fake_a).numpy() - 1.0) ** 2)
    cycle = np.mean(np.abs(f(fake_b).numpy() - a)) + np.mean(np.abs(g(fake_a).numpy() - b))
    identity = np.mean(np.abs(g(b).numpy() - b)) + np.mean(np.abs(f(a).numpy() - a))
    expected = adv_ab + adv_ba + 10.0 * cycle + 5.0 * identity
    terms = {"g_ab_adversarial": adv_ab, "g_ba_adversarial": adv_ba, "cycle_loss": cycle,
             "identity_loss": identity, "g_loss": expected}  # fmt: skip
    for key, value in terms.items():
        assert float(values[key]) == pytest.approx(value, rel=1e-5), key
    np.testing.assert_allclose(values["fake_b"], fake_b, atol=1e-6)
    # halved least squares for each discriminator: [(D(x) - 1)^2 + D(fake)^2] / 2
    d_a = model.discriminator_objective(model.discriminator_a, a, fake_a, training=False)
    real, fake = model.discriminator_a(a).numpy(), model.discriminator_a(fake_a).numpy()
    assert float(d_a) == pytest.approx(0.5 * (np.mean((real - 1) ** 2) + np.mean(fake**2)), 1e-5)
    # without the identity term
    plain = tiny(identity_weight=0.0).generator_objective(
        to_signed(domains[0]), to_signed(domains[1]), training=False
    )
    assert "identity_loss" not in plain
    assert float(plain["g_loss"]) == pytest.approx(expected - 5.0 * identity, rel=1e-5)


def test_reference_loss_is_the_cycle_l1_on_unit_images(domains):
    model = tiny()
    a, b = domains
    back_a = model.translate_b_to_a(model.translate_a_to_b(a)).numpy()
    back_b = model.translate_a_to_b(model.translate_b_to_a(b)).numpy()
    expected = 0.5 * (np.abs(back_a - a).mean() + np.abs(back_b - b).mean())
    assert float(model.reference_loss(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(model.generator_objective(to_signed(a), to_signed(b), False)["cycle_loss"]) == (
        pytest.approx(4 * expected, rel=1e-4)  # signed images: twice per direction, two summed
    )
    assert model.translate(a).numpy() == pytest.approx(model.translate_a_to_b(a).numpy())
    assert list(model.TRANSLATIONS) == ["translate_a_to_b", "translate_b_to_a"]
    assert model.source_shape == model.target_shape == SHAPE and not model.paired


# -- the steps -----------------------------------------------------------------------------------
NETWORK_OF = {
    "generator_ab_optimizer": "generator_ab",
    "generator_ba_optimizer": "generator_ba",
    "discriminator_a_optimizer": "discriminator_a",
    "discriminator_b_optimizer": "discriminator_b",
}


def weights_of(model: CycleGAN) -> dict[str, list[np.ndarray]]:
    return {net: [v.numpy() for v in getattr(model, net).weights] for net in NETWORK_OF.values()}


@pytest.mark.parametrize("role", list(NETWORK_OF))
def test_each_optimizer_moves_only_its_network(role, domains):
    model = tiny()
    model.compile(
        **{r: keras.optimizers.SGD(0.1 if r == role else 0.0, momentum=0.5) for r in NETWORK_OF}
    )
    before = weights_of(model)
    model.train_step(domains)  # eagerly
    after = weights_of(model)
    for net in NETWORK_OF.values():
        moved = any(not np.array_equal(x, y) for x, y in zip(before[net], after[net], strict=True))
        assert moved == (net == NETWORK_OF[role]), (role, net)
    assert {r: int(o.iterations.numpy()) for r, o in model.optimizers.items()} == dict.fromkeys(
        NETWORK_OF, 1
    )
    variables = model.optimizers[role].variables
    assert sum(int(np.prod(v.shape)) for v in variables) == 2 + sum(
        int(np.prod(v.shape)) for v in getattr(model, NETWORK_OF[role]).trainable_variables
    )  # SGD: iterations, learning rate, one momentum slot per weight of its network


def test_compiled_step_moves_both_generators_from_the_same_point_and_saves(domains, tmp_path):
    """One Adam (here SGD) over both generators, as the reference code: each generator's
    update is the gradient of the joint objective at the weights before either moved. The
    pools filled in the compiled step, the optimizers and the config survive a .keras file."""
    model = tiny(pool_size=6)
    model.compile(**{r: keras.optimizers.SGD(0.1) for r in NETWORK_OF})
    variables = model.generator_ab.trainable_variables + model.generator_ba.trainable_variables
    with tf.GradientTape() as tape:
        loss = model.generator_objective(to_signed(domains[0]), to_signed(domains[1]))["g_loss"]
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    before = [v.numpy() for v in variables]
    step = tf.function(model.train_step)
    logs = step(domains)
    for v, w, g in zip(variables, before, grads, strict=True):
        np.testing.assert_allclose(v.numpy() - w, -0.1 * g, atol=1e-3 * 0.1 * np.abs(g).max())
    assert float(logs["g_loss"]) == pytest.approx(float(loss), rel=1e-5)
    assert int(model.pool_a.count.numpy()) == int(model.pool_b.count.numpy()) == 4
    step(domains)
    assert int(model.pool_b.count.numpy()) == 6
    path = tmp_path / "cyclegan.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CycleGAN)
    for key in ("lambda_cycle", "identity_weight", "pool_size", "seed"):
        assert loaded.get_config()[key] == model.get_config()[key]
    for pool in ("pool_a", "pool_b"):
        np.testing.assert_array_equal(getattr(loaded, pool).images, getattr(model, pool).images)
        assert int(getattr(loaded, pool).count.numpy()) == 6
    for role, optimizer in loaded.optimizers.items():
        assert int(optimizer.iterations.numpy()) == 2, role
    b = domains[1]
    np.testing.assert_allclose(loaded.translate_b_to_a(b), model.translate_b_to_a(b), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(a, b\) batches"):
        model.train_step(domains[0])


def test_default_optimizers_are_adam_2e4_beta_half():
    model = tiny()
    model.compile()
    for optimizer in model.optimizers.values():
        assert isinstance(optimizer, keras.optimizers.Adam)
        assert float(optimizer.learning_rate) == pytest.approx(2e-4) and optimizer.beta_1 == 0.5


def test_pool_on_two_replicas_returns_and_keeps_what_one_device_does():
    """Each replica walks the gathered global batch with the global draws, so its slice of
    the result and the pool it keeps are one device's (the seed generators move in step)."""
    from zoo.distribute import make_strategy

    strategy = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    images = constant_images(np.arange(12, dtype="float32"))
    draws = np.random.default_rng(3).uniform(size=(12, 2)).astype("float32")

    def replica_draw(shape):  # the global draws, sliced as Trainer.draw slices them
        context = tf.distribute.get_replica_context()
        start = context.replica_id_in_sync_group * 6
        return tf.gather(draws, start + tf.range(shape[0]))

    single = ImagePool((2, 2, 1), pool_size=5)
    expected = single.query(images, lambda shape: draws).numpy()
    with strategy.scope():
        pool = ImagePool((2, 2, 1), pool_size=5)
    batches = next(
        iter(
            strategy.experimental_distribute_dataset(
                tf.data.Dataset.from_tensor_slices(images).batch(12)
            )
        )
    )
    out = strategy.run(tf.function(lambda x: pool.query(x, replica_draw)), args=(batches,))
    got = np.concatenate([np.asarray(v) for v in strategy.experimental_local_results(out)])
    np.testing.assert_array_equal(got, expected)
    assert np.sum(got != images) > 0  # some images were swapped
    copies = strategy.experimental_local_results(pool.images.value)
    assert len(copies) == 2  # one per replica, each holding one device's pool
    for copy in copies:
        np.testing.assert_array_equal(np.asarray(copy), single.images.numpy())
    assert int(pool.count.numpy()) == 5


def test_importing_the_model_module_registers_linear_decay():
    """A run's model.keras holds LinearDecay in its optimizers' config; ``zoo export`` and
    ``zoo.load`` import only the model modules (zoo/models/*.py), so importing cyclegan's
    must register it (the first export of a cyclegan run failed without it)."""
    import importlib
    import sys

    names = ("zoo.models.cyclegan", "zoo.translation.schedules")
    saved = {name: sys.modules.pop(name) for name in names}
    registered = keras.saving.get_custom_objects().pop("zoo>LinearDecay")
    try:
        assert keras.saving.get_registered_object("zoo>LinearDecay") is None
        importlib.import_module("zoo.models.cyclegan")
        assert keras.saving.get_registered_object("zoo>LinearDecay") is not None
    finally:  # the classes the other tests hold stay the registered ones
        sys.modules.update(saved)
        keras.saving.get_custom_objects()["zoo>LinearDecay"] = registered
