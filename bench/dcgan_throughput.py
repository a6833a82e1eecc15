"""DCGAN training throughput: the zoo's GAN trainer against a plain-Keras DCGAN.

Both sides train the *same* generator and discriminator architecture (built by
``zoo.networks``) with the same batch, losses (non-saturating BCE) and Adam
settings; the reference is the usual hand-written ``keras.Model.train_step``
of public examples. Runs alternate (A B A B ...) in one process and the report
gives the ratio of median images/s, which survives a noisy machine better than
an absolute figure.

    python -m bench.dcgan_throughput [--image-size 28] [--batch 64] [--steps 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import zoo
from bench.common import interleaved, median, timed, write_report
from zoo import networks


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
    return keras.optimizers.Adam(2e-4, beta_1=0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved measurements per side")
    args = parser.parse_args(argv)

    channels = 1 if args.image_size == 28 else 3
    shape = (args.image_size, args.image_size, channels)
    ours = zoo.load("dcgan", image_shape=shape)
    ours.compile(generator_optimizer=adam(), discriminator_optimizer=adam())
    filters = tuple(
        layer.filters
        for layer in ours.discriminator.layers
        if isinstance(layer, keras.layers.Conv2D)
    )
    reference = PlainKerasDCGAN(
        networks.dcgan_generator(ours.latent_dim, shape, filters, seed=0),
        networks.dcgan_discriminator(shape, filters, seed=1),
        ours.latent_dim,
    )
    reference.compile(d_optimizer=adam(), g_optimizer=adam())
    assert reference.generator.count_params() == ours.generator.count_params()
    assert reference.discriminator.count_params() == ours.discriminator.count_params()

    rng = np.random.default_rng(0)
    images = rng.random((args.batch * args.steps, *shape), dtype=np.float32)
    data = tf.data.Dataset.from_tensor_slices(images).batch(args.batch, drop_remainder=True).cache()
    for model in (ours, reference):  # compile the step functions before timing
        model.fit(data.take(3), epochs=1, verbose=0, shuffle=False)

    def runner(model: keras.Model):
        return lambda: (
            args.batch
            * args.steps
            / timed(lambda: model.fit(data, epochs=1, verbose=0, shuffle=False))
        )

    results = interleaved({"zoo": runner(ours), "plain_keras": runner(reference)}, args.repeats)
    zoo_ips, ref_ips = median(results["zoo"]), median(results["plain_keras"])
    ratio = zoo_ips / ref_ips
    lines = [
        f"DCGAN {shape[0]}x{shape[1]}x{shape[2]}, batch {args.batch}, filters {filters}, "
        f"{args.steps} steps per measurement, {args.repeats} interleaved measurements per side.",
        "",
        "| trainer | median images/s | all measurements (images/s) |",
        "|---|---:|---|",
        f"| zoo `GAN` (dcgan) | {zoo_ips:.0f} | {', '.join(f'{v:.0f}' for v in results['zoo'])} |",
        f"| plain Keras reference | {ref_ips:.0f} | "
        f"{', '.join(f'{v:.0f}' for v in results['plain_keras'])} |",
        "",
        f"**Ratio zoo / plain Keras: {ratio:.2f}** (1.00 = same speed; above 1 = zoo faster).",
    ]
    body = "\n".join(lines)
    print(body)
    command = "python -m bench.dcgan_throughput" + (f" {' '.join(argv)}" if argv else "")
    path = write_report(f"dcgan_throughput_{shape[0]}", "DCGAN training throughput", body, command)
    print(f"\nreport: {path}")


if __name__ == "__main__":
    main()
