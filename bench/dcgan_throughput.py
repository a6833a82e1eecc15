"""DCGAN training throughput: the zoo's DCGAN recipe against a plain-Keras DCGAN, and the
share of this machine's fp32 matmul peak that a training step reaches.

The zoo side is ``zoo train dcgan_mnist`` without the logging: the recipe's model, its
optimizers (the runner's ``build_optimizers``), its ``[training]`` speed keys (the
runner's ``compile_settings``) and its batches (``zoo.data.batch``: cache, shuffle,
prefetch). The reference is what public examples write (the TensorFlow DCGAN tutorial,
keras.io's GAN examples): ``keras.Sequential`` networks of the same architecture (the
layer-by-layer weight shapes are checked equal), a ``keras.Model.train_step`` with one
discriminator and one generator step, default ``compile()``, fed by
``Dataset.from_tensor_slices(x).shuffle(n).batch(b)``. Both train on the bundled digits.

Runs alternate (peak, zoo, reference, peak, zoo, ...) in one process; the report gives
medians, the zoo / reference ratio of images/s, and the ratio of CPU seconds per image
(``time.process_time``, which other tenants of a shared machine do not inflate).

FLOPs per step are counted from the model: TensorFlow's profiler float-op count
(``tf.compat.v1.profiler``, ``ProfileOptionBuilder.float_operation()``) on the graph of the
traced ``train_step``, pruned to what the step computes, cross-checked against an analytic
per-layer count of every network call's forward and backward pass.

    python -m bench.dcgan_throughput [--recipe dcgan_mnist] [--epochs 1] [--repeats 7]
        [--set KEY=VALUE] [--variant 'training.steps_per_execution=1'] [--variant reference-feed]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from bench.common import median, recipe_training, write_report
from zoo import data as zdata

#: Ops whose float-op count is the step's convolution / matrix-multiply work.
MATMUL_OPS = ("MatMul", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")


# --------------------------------------------------------------------------- reference


class PlainKerasDCGAN(keras.Model):
    """The reference: a DCGAN train_step as written in public Keras examples."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int):
        super().__init__()
        self.generator, self.discriminator, self.latent_dim = generator, discriminator, latent_dim
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.seed_generator = keras.random.SeedGenerator(0)
        self.d_tracker = keras.metrics.Mean(name="d_loss")
        self.g_tracker = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self):
        return [self.d_tracker, self.g_tracker]

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def train_step(self, real):
        batch = tf.shape(real)[0]
        real = real * 2.0 - 1.0
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = self.bce(tf.ones_like(real_logits), real_logits) + self.bce(
                tf.zeros_like(fake_logits), fake_logits
            )
        grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
        self.d_optimizer.apply_gradients(
            zip(grads, self.discriminator.trainable_variables, strict=True)
        )
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            fake_logits = self.discriminator(self.generator(z, training=True), training=True)
            g_loss = self.bce(tf.ones_like(fake_logits), fake_logits)
        grads = tape.gradient(g_loss, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(
            zip(grads, self.generator.trainable_variables, strict=True)
        )
        self.d_tracker.update_state(d_loss)
        self.g_tracker.update_state(g_loss)
        return {"d_loss": self.d_tracker.result(), "g_loss": self.g_tracker.result()}


def adam() -> keras.optimizers.Optimizer:
    """Radford et al. (2016): Adam(2e-4, beta_1=0.5)."""
    return keras.optimizers.Adam(2e-4, beta_1=0.5)


def reference_generator(
    latent_dim: int, image_shape: Sequence[int], filters: Sequence[int]
) -> keras.Sequential:
    """The DCGAN generator as public examples write it (plain Keras layers, default
    initialisers), laid out as :func:`zoo.networks.dcgan_generator`."""
    widths = list(reversed(filters))
    side = image_shape[0] // 2 ** len(filters), image_shape[1] // 2 ** len(filters)
    model = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(side[0] * side[1] * widths[0], use_bias=False),
            layers.Reshape((*side, widths[0])),
            layers.BatchNormalization(),
            layers.ReLU(),
        ]
    )
    for width in widths[1:]:
        model.add(layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False))
        model.add(layers.BatchNormalization())
        model.add(layers.ReLU())
    model.add(
        layers.Conv2DTranspose(image_shape[-1], 4, strides=2, padding="same", activation="tanh")
    )
    return model


def reference_discriminator(image_shape: Sequence[int], filters: Sequence[int]) -> keras.Sequential:
    """The DCGAN discriminator as public examples write it, laid out as
    :func:`zoo.networks.dcgan_discriminator`."""
    model = keras.Sequential([keras.Input(tuple(image_shape))])
    for i, width in enumerate(filters):
        model.add(layers.Conv2D(width, 4, strides=2, padding="same", use_bias=i == 0))
        if i > 0:
            model.add(layers.BatchNormalization())
        model.add(layers.LeakyReLU(0.2))
    model.add(layers.Flatten())
    model.add(layers.Dense(1))
    return model


def weight_shapes(network: keras.Model) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in network.weights]


# --------------------------------------------------------------------------- FLOPs


def layer_flops(layer: keras.layers.Layer) -> int:
    """Analytic forward FLOPs per example of a Dense / Conv2D / Conv2DTranspose layer
    (multiply-adds x 2, bias and activation not counted); 0 for any other layer."""
    if isinstance(layer, layers.Dense):
        return 2 * int(layer.input.shape[-1]) * layer.units
    if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
        kernel = math.prod(layer.kernel_size) * int(layer.input.shape[-1]) * layer.filters
        # a convolution slides over its output, a transposed one over its input
        grid = layer.output.shape if isinstance(layer, layers.Conv2D) else layer.input.shape
        return 2 * int(grid[1]) * int(grid[2]) * kernel
    return 0


def network_flops(network: keras.Model) -> tuple[int, int]:
    """(forward FLOPs per example, FLOPs of the first counted layer) of a network."""
    counts = [n for n in (layer_flops(layer) for layer in network.layers) if n]
    return sum(counts), counts[0]


def analytic_step_flops(generator: keras.Model, discriminator: keras.Model, batch: int) -> int:
    """Convolution / matmul FLOPs of one DCGAN step (one D step, one G step) at ``batch``.

    A layer's backward pass costs its forward twice (input gradient, weight gradient),
    less the input gradient of a network's first layer when nothing upstream needs it.
    D step: G forward, D forward on real and on fake, D backward (weights) on both.
    G step: G forward, D forward, D backward (inputs only: D's weights are not updated),
    G backward.
    """
    g, g_first = network_flops(generator)
    d, d_first = network_flops(discriminator)
    d_step = g + 2 * d + 2 * (d + d - d_first)
    g_step = g + d + d + (g + g - g_first)
    return batch * (d_step + g_step)


#: Graph plumbing that runs no kernel worth counting.
PLUMBING_OPS = ("Const", "Identity", "NoOp", "Placeholder")


def step_graph(fn: Callable[..., Any], *specs: tf.TensorSpec) -> tf.Graph:
    """The graph of ``fn`` traced at ``specs``, cut to what the call computes (its
    outputs and every stateful op, e.g. variable updates): ops a gradient builds but
    nothing uses (the weight gradient of a network that is not being updated) are
    dropped, as TensorFlow's runtime drops them. Every tensor keeps its traced shape."""
    graph = tf.function(fn).get_concrete_function(*specs).graph
    keep = [op.name for op in graph.get_operations() if op._is_stateful]
    keep += [t.op.name for t in graph.outputs]
    pruned = tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), sorted(set(keep)))
    with tf.Graph().as_default() as cut:
        tf.graph_util.import_graph_def(pruned, name="")
    for op in cut.get_operations():  # variable reads lose their shapes on import
        for tensor in op.outputs:
            tensor.set_shape(graph.get_tensor_by_name(tensor.name).shape)
    return cut


def graph_op_count(fn: Callable[..., Any], *specs: tf.TensorSpec) -> int:
    """Ops that run kernels in :func:`step_graph` (before Grappler's rewrites)."""
    return sum(op.type not in PLUMBING_OPS for op in step_graph(fn, *specs).get_operations())


def graph_flops(fn: Callable[..., Any], *specs: tf.TensorSpec) -> dict[str, int]:
    """Float ops of ``fn`` traced at ``specs`` (:func:`step_graph`), by op type, from
    TensorFlow's profiler (``ProfileOptionBuilder.float_operation()``)."""
    with step_graph(fn, *specs).as_default() as graph:
        options = (
            tf.compat.v1.profiler.ProfileOptionBuilder(
                tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
            )
            .with_empty_output()
            .build()
        )
        profile = tf.compat.v1.profiler.profile(graph, cmd="op", options=options)
    counts: dict[str, int] = {}
    nodes = list(profile.children)
    while nodes:  # the op view nests each op type under the previous one
        node = nodes.pop()
        counts[node.name] = counts.get(node.name, 0) + int(node.float_ops)
        nodes.extend(node.children)
    return {name: n for name, n in counts.items() if n}


# --------------------------------------------------------------------------- peak


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul rate: the best of ``repeats`` timed ``n x n`` products
    (``2 n^3`` FLOPs each), in GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = (tf.constant(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    product().numpy()  # trace and warm up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------- the two sides


def zoo_side(
    recipe_name: str, overrides: list[str] | None = None
) -> tuple[keras.Model, tf.data.Dataset, dict[str, Any]]:
    """The recipe's model compiled as ``zoo train`` compiles it, its training batches
    (``zoo.data.batch``: one shuffled epoch per iteration) and the settings used;
    ``overrides`` as ``zoo train --set`` takes them."""
    recipe, model, train, steps = recipe_training(recipe_name, overrides)
    d = recipe.data
    batches = zdata.batch(
        train,
        d["batch_size"],
        seed=recipe.seed,
        cache=d["cache"],
        shuffle_buffer=d["shuffle_buffer"],
    ).take(steps)
    speed = {"steps_per_execution": model.steps_per_execution, "jit_compile": model.jit_compile}
    return model, batches, {"recipe": recipe, "steps": steps, "compile": speed}


def reference_side(
    ours: keras.Model, recipe: Any
) -> tuple[PlainKerasDCGAN, tf.data.Dataset, np.ndarray]:
    """The plain-Keras DCGAN of the same architecture, compiled with the recipe's Adam
    settings and default ``compile()``, and its data fed as public examples feed it."""
    shape = tuple(ours.image_shape)
    filters = tuple(
        layer.filters for layer in ours.discriminator.layers if isinstance(layer, layers.Conv2D)
    )
    reference = PlainKerasDCGAN(
        reference_generator(ours.latent_dim, shape, filters),
        reference_discriminator(shape, filters),
        ours.latent_dim,
    )
    if weight_shapes(reference.generator) != weight_shapes(ours.generator) or weight_shapes(
        reference.discriminator
    ) != weight_shapes(ours.discriminator):
        raise RuntimeError("the reference networks differ from the zoo's DCGAN")
    tables = {role: dict(recipe.optimizer[role]) for role in ("generator", "discriminator")}
    for table in tables.values():
        if table.pop("name", "adam") != "adam":
            raise ValueError(f"the reference trains with Adam; the recipe has {recipe.optimizer}")
    reference.compile(
        d_optimizer=keras.optimizers.Adam(**tables["discriminator"]),
        g_optimizer=keras.optimizers.Adam(**tables["generator"]),
    )
    images = zdata.load_sample(recipe.data["split"])[0].astype("float32") / 255.0
    feed = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images))
    return reference, feed.batch(recipe.data["batch_size"]), images


# --------------------------------------------------------------------------- main


def epoch_runner(model: keras.Model, dataset: tf.data.Dataset, images: int, epochs: int):
    """A measurement: ``epochs`` epochs of ``fit``; (images/s, images per CPU second)."""

    def run() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return images * epochs / wall, images * epochs / cpu

    return run


#: ``--variant`` that trains the recipe's model on the reference's feed (no cache, no prefetch).
REFERENCE_FEED = "reference-feed"


def variant_runner(args: argparse.Namespace, variant: str, reference_feed: tf.data.Dataset):
    """A measurement of the recipe with ``variant``'s overrides (``;``-separated
    ``key=value``), or of its model on the reference's feed (``reference-feed``)."""
    if variant == REFERENCE_FEED:
        model, _, _ = zoo_side(args.recipe, args.set)
        count = sum(int(b.shape[0]) for b in reference_feed)
        return epoch_runner(model, reference_feed, count, args.epochs)
    model, batches, settings = zoo_side(args.recipe, [*args.set, *variant.split(";")])
    return epoch_runner(
        model, batches, settings["steps"] * batches.element_spec.shape[0], args.epochs
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    ours, batches, settings = zoo_side(args.recipe, args.set)
    recipe = settings["recipe"]
    batch = recipe.data["batch_size"]
    reference, feed, images = reference_side(ours, recipe)
    runs = {
        "zoo": epoch_runner(ours, batches, settings["steps"] * batch, args.epochs),
        "reference": epoch_runner(reference, feed, len(images), args.epochs),
    }
    for variant in args.variant:
        runs[variant] = variant_runner(args, variant, feed)
    for run in runs.values():  # trace the step functions and fill the zoo's cache
        run()
    spec = tf.TensorSpec((batch, *ours.image_shape), tf.float32)
    flops = {
        "zoo": graph_flops(ours.train_step, spec),
        "reference": graph_flops(reference.train_step, spec),
    }
    op_count = {
        "zoo": graph_op_count(ours.train_step, spec),
        "reference": graph_op_count(reference.train_step, spec),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    peaks = []
    for _ in range(args.repeats):
        peaks.append(matmul_gflops(args.peak_size))
        for name, run in runs.items():
            results[name].append(run())
    return {
        "ours": ours,
        "settings": settings,
        "batch": batch,
        "results": results,
        "peaks": peaks,
        "flops": flops,
        "ops": op_count,
        "analytic": analytic_step_flops(ours.generator, ours.discriminator, batch),
    }


def report(args: argparse.Namespace, m: dict[str, Any]) -> str:
    ours, batch, results = m["ours"], m["batch"], m["results"]
    shape = "x".join(str(s) for s in ours.image_shape)
    wall = {k: median([r[0] for r in v]) for k, v in results.items()}
    best = {k: max(r[0] for r in v) for k, v in results.items()}
    cpu = {k: median([r[1] for r in v]) for k, v in results.items()}
    peak = median(m["peaks"])
    conv = {k: sum(f.get(op, 0) for op in MATMUL_OPS) for k, f in m["flops"].items()}
    total = {k: sum(f.values()) for k, f in m["flops"].items()}
    speed = m["settings"]["compile"]
    labels = {"zoo": "**zoo recipe**", "reference": "plain Keras reference"}
    labels |= {
        v: "zoo model, reference's feed" if v == REFERENCE_FEED else f"zoo recipe with `{v}`"
        for v in args.variant
    }
    overrides = f" with `{';'.join(args.set)}`" if args.set else ""
    lines = [
        f"Recipe `{args.recipe}`{overrides}: DCGAN {shape}, batch {batch}, "
        f"{m['settings']['steps']} steps per epoch; the zoo's compile settings from the recipe: "
        + ", ".join(f"`{k}={v!r}`" for k, v in speed.items())
        + f". {args.repeats} interleaved rounds (peak, then each side in the order below) of "
        f"{args.epochs} epoch(s) per side; medians.",
        "",
        "| side | median images/s | vs reference | vs zoo recipe | best round | vs reference "
        "| images per CPU second | vs reference | images/s, every round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, label in labels.items():
        rounds = ", ".join(f"{r[0]:.0f}" for r in results[name])
        lines.append(
            f"| {label} | {wall[name]:.0f} | {wall[name] / wall['reference']:.2f}x | "
            f"{wall[name] / wall['zoo']:.2f}x | {best[name]:.0f} | "
            f"{best[name] / best['reference']:.2f}x | {cpu[name]:.0f} | "
            f"{cpu[name] / cpu['reference']:.2f}x | {rounds} |"
        )
    ratio = wall["zoo"] / wall["reference"]
    lines += [
        "",
        f"**Ratio zoo recipe / plain Keras: {ratio:.2f}x images/s** (medians; target 1.30x); "
        f"{best['zoo'] / best['reference']:.2f}x between the best rounds, "
        f"{cpu['zoo'] / cpu['reference']:.2f}x in images per CPU second "
        "(`time.process_time`, all threads). On a shared machine other tenants stall "
        "some rounds (the repeated low values); the best round and the CPU seconds are "
        "the least disturbed figures.",
        "",
        f"Machine's fp32 matmul rate ({args.peak_size}x{args.peak_size} `tf.matmul`, best of 5, "
        f"once per round): median {peak:.0f} GFLOP/s "
        f"(rounds: {', '.join(f'{p:.0f}' for p in m['peaks'])}).",
        "",
        "| side | FLOPs per step: conv + matmul (profiler) | all float ops (profiler) | "
        "FLOPs per image | GFLOP/s at the median rate | share of the fp32 matmul peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("zoo", "reference"):
        rate = total[name] / batch * wall[name] / 1e9
        lines.append(
            f"| {labels[name]} | {conv[name] / 1e6:.1f} M | {total[name] / 1e6:.1f} M | "
            f"{total[name] / batch / 1e6:.1f} M | {rate:.0f} | {rate / peak:.0%} |"
        )
    lines += [
        "",
        f"Analytic conv + matmul count (forward and backward of every network call, "
        f"`analytic_step_flops`): {m['analytic'] / 1e6:.1f} M per step; the profiler's "
        f"conv + matmul ops: {conv['zoo'] / 1e6:.1f} M (zoo), {conv['reference'] / 1e6:.1f} M "
        "(reference). The rest of the float ops is element-wise work (batch norm, "
        "activations, losses, Adam).",
        "",
        f"A zoo step takes {1e3 * batch / wall['zoo']:.1f} ms at the median rate; its float ops "
        f"at the matmul rate would take {1e3 * total['zoo'] / (peak * 1e9):.1f} ms. The step is "
        f"bound by overhead rather than arithmetic: {m['ops']['zoo']} ops per traced step "
        f"({m['ops']['reference']} in the reference's; before Grappler's rewrites), most of "
        "them small (batch norm and Adam run as many element-wise ops in Keras 3), and "
        "convolutions over 7x7 and 14x14 maps, which run far below a large matmul's rate.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="dcgan_mnist")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--peak-size", type=int, default=2048, help="matmul size for the peak")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[;KEY=VALUE]",
        help=f"also time the recipe with these overrides (or {REFERENCE_FEED!r})",
    )
    args = parser.parse_args(argv)
    body = report(args, measure(args))
    print(body)
    command = "python -m bench.dcgan_throughput" + (f" {' '.join(argv)}" if argv else "")
    path = write_report("dcgan_throughput", "DCGAN training throughput", body, command)
    print(f"\nreport: {path}")


if __name__ == "__main__":
    main()
