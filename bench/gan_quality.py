"""Sample quality of every registered GAN at one training budget, beside the real floor.

On the bundled MNIST sample (4,000 training digits), each registered GAN (family "gan",
tiny variants excluded) is built with its registered defaults and default optimizers,
seeded, and trained for the same number of generator steps with 64 real images per
discriminator step: a WGAN's ``discriminator_steps`` critic steps each take a fresh
64-image minibatch (Arjovsky et al., 2017, Algorithm 1; Gulrajani et al., 2017), so it is
fed batches of 64 x ``discriminator_steps``, as its recipe does. Then 1,000 samples
from fixed latent points are scored in the bundled classifier's feature space
(:mod:`zoo.metrics.quality`) against the train split, beside the real-versus-real
floor (the 1,000-digit test split against the same train split), and a 10x10 sample grid
is written per model.

Training speed is measured as in ``bench/dcgan_throughput.py``: the zoo trainer against
``PlainKerasDCGAN`` (imported from there) on copies of the *same* generator and
discriminator, alternating runs in this process, reported as a ratio of median images/s.

    python -m bench.gan_quality [--steps 1500] [--batch 64] [--models dcgan,gan] [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from bench.common import REPORTS, interleaved, median, timed, write_report
from bench.dcgan_throughput import PlainKerasDCGAN, adam
from zoo import registry
from zoo.data import image_grid, load_sample, save_png
from zoo.metrics import SampleQualityEvaluator, generate_samples
from zoo.precision import precision

GRIDS = REPORTS / "gan_quality"
ORDER = ("gan", "dcgan", "cgan", "wgan", "wgan_gp")


def registered_gans() -> list[str]:
    names = [
        n for n in registry.list_models(include_tiny=False) if registry.get_spec(n).family == "gan"
    ]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


class CyclicLabels(keras.Model):
    """A conditional network called like an unconditional one: sample ``i`` of a batch
    gets class ``i mod num_classes`` (the plain-Keras reference has no labels)."""

    def __init__(self, network: keras.Model, num_classes: int):
        super().__init__()
        self.network, self.num_classes = network, num_classes

    def call(self, x, training=False):
        labels = ops.mod(ops.arange(ops.shape(x)[0], dtype="int32"), self.num_classes)
        return self.network([x, labels], training=training)


def copy_network(network: keras.Model) -> keras.Model:
    """Same architecture, fresh weights-identical copy (the trainer's own EMA idiom)."""
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(network))
    copy.set_weights(network.get_weights())
    return copy


def make_data(conditional: bool, batch: int, seed: int) -> tf.data.Dataset:
    images, labels = load_sample("train")
    x = images.astype("float32") / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, labels) if conditional else x)
    return ds.shuffle(len(x), seed=seed).batch(batch, drop_remainder=True).repeat()


def data_batch(model: keras.Model, per_step: int) -> int:
    """Real images per generator step: ``per_step`` for every discriminator step."""
    return per_step * (model.discriminator_steps if model.split_batch else 1)


def throughput(name: str, args: argparse.Namespace) -> dict[str, object]:
    """Median images/s of the zoo trainer and of PlainKerasDCGAN on copies of its nets."""
    keras.utils.set_random_seed(args.seed)
    ours = registry.load(name)
    ours.compile()
    generator, discriminator = copy_network(ours.generator), copy_network(ours.discriminator)
    if ours.conditional:
        generator = CyclicLabels(generator, ours.num_classes)
        discriminator = CyclicLabels(discriminator, ours.num_classes)
    reference = PlainKerasDCGAN(generator, discriminator, ours.latent_dim)
    reference.compile(d_optimizer=adam(), g_optimizer=adam())
    batch = data_batch(ours, args.batch)
    data = make_data(ours.conditional, batch, args.seed).take(args.timing_steps).cache()
    plain_data = data.map(lambda x, y: x) if ours.conditional else data
    ours.fit(data.take(3), epochs=1, verbose=0)  # trace the step functions before timing
    reference.fit(plain_data.take(3), epochs=1, verbose=0)
    images = batch * args.timing_steps

    def runner(model: keras.Model, ds: tf.data.Dataset):
        return lambda: images / timed(lambda: model.fit(ds, epochs=1, verbose=0))

    results = interleaved(
        {"zoo": runner(ours, data), "plain": runner(reference, plain_data)}, args.repeats
    )
    zoo_ips, plain_ips = median(results["zoo"]), median(results["plain"])
    return {"zoo": zoo_ips, "plain": plain_ips, "ratio": zoo_ips / plain_ips}


def train(name: str, args: argparse.Namespace) -> tuple[keras.Model, float]:
    keras.utils.set_random_seed(args.seed)
    with precision(args.precision):  # the layers keep the dtype policy they are built in
        model = registry.load(name, seed=args.seed)
    model.compile()
    data = make_data(model.conditional, data_batch(model, args.batch), args.seed)
    epochs = max(1, args.steps // args.steps_per_epoch)
    per_epoch = args.steps // epochs
    start = time.perf_counter()
    model.fit(data, epochs=epochs, steps_per_epoch=per_epoch, verbose=0)
    seconds = time.perf_counter() - start
    steps = int(model.generator_optimizer.iterations.numpy())
    assert steps == epochs * per_epoch, (name, steps)
    return model, seconds


def findings(rows: list[tuple]) -> list[str]:
    """What the table says, in words, from this run's numbers (``rows``: name, metrics,
    seconds, speed)."""
    ranked = sorted(rows, key=lambda row: row[1].fid)
    out = [
        "- Ranking by FID: " + ", ".join(f"`{name}` {g.fid:.1f}" for name, g, *_ in ranked) + ".",
    ]
    narrow = [(name, g) for name, g, *_ in rows if g.recall < 0.05]
    if narrow:
        out.append(
            "- Recall below 0.05 ("
            + ", ".join(f"`{n}` {g.recall:.3f}" for n, g in narrow)
            + ") with precision near the others': the samples are plausible in the "
            "classifier's features but cover almost none of the real digits' neighbourhoods "
            "(each real digit's k-NN ball rarely contains a sample): too little diversity or "
            "detail at this budget, though the class histograms show no collapse onto one "
            "digit."
        )
    names = {name for name, *_ in rows}
    if "wgan" in names:
        out.append(
            "- `wgan` (weight clipping) learns slowest at the paper's settings (RMSProp 5e-5, "
            "c = 0.01): its samples are still blurry strokes after this budget, while "
            "`wgan_gp`, the same networks and critic schedule with the gradient penalty in "
            "place of clipping, reaches `dcgan`'s quality. Gulrajani et al. (2017, sec. 3) "
            "explain why: clipping pushes the critic towards overly simple functions and "
            "slows optimisation; Arjovsky et al. trained for about 10^5 generator steps."
        )
    return out


def describe(model: keras.Model, batch: int) -> str:
    n = model.discriminator_steps
    critic = (
        f"{n} critic steps, each on its own {batch}-image minibatch ({n * batch} real images "
        "per generator step)"
        if n > 1
        else "1 D step"
    )
    extras = []
    if model.gradient_penalty:
        extras.append(f"GP λ={model.gradient_penalty:g}")
    if model.clip_value is not None:
        extras.append(f"clip {model.clip_value:g}")
    opt = model.generator_optimizer
    lr = float(ops.convert_to_tensor(opt.learning_rate))
    return ", ".join([model.loss_kind, critic, *extras, f"{type(opt).__name__} {lr:g}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="generator steps per model")
    parser.add_argument(
        "--batch", type=int, default=64, help="real images per discriminator/critic step"
    )
    parser.add_argument("--steps-per-epoch", type=int, default=150)
    parser.add_argument("--models", help="comma-separated (default: every registered GAN)")
    parser.add_argument("--n", type=int, default=1000, help="samples scored per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-steps", type=int, default=20, help="steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side")
    parser.add_argument("--no-report", action="store_true", help="print only (smoke runs)")
    parser.add_argument(
        "--precision", default="float32", help="dtype policy the trained models are built in"
    )
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else registered_gans()
    wall = time.perf_counter()
    load_before = os.getloadavg()[0]

    train_x, _ = load_sample("train")
    test_x, _ = load_sample("test")
    evaluator = SampleQualityEvaluator(train_x, test_x, seed=args.seed)
    rows, setups, histograms = [], [], []
    for name in names:
        speed = throughput(name, args)
        model, seconds = train(name, args)
        samples = generate_samples(model, args.n, seed=args.seed)
        report = evaluator.evaluate(samples)
        g = report.generated
        if not args.no_report:
            save_png(image_grid(samples[:100], ncols=10), GRIDS / f"{name}.png")
        rows.append((name, g, seconds, speed))
        setups.append(f"- `{name}`: {describe(model, args.batch)}")
        histograms.append((name, g.class_histogram))
        print(
            f"{name}: FID {g.fid:.2f} KID {g.kid:.4f} IS {g.inception_score:.2f} "
            f"P {g.precision:.3f} R {g.recall:.3f} D {g.density:.3f} C {g.coverage:.3f} "
            f"classKL {g.class_kl:.3f}; train {seconds:.0f}s; {speed['zoo']:.0f} vs "
            f"{speed['plain']:.0f} images/s, ratio {speed['ratio']:.2f}",
            flush=True,
        )
    f = evaluator.floor
    minutes = (time.perf_counter() - wall) / 60

    def cells(m) -> str:
        return (
            f"{m.fid:.2f} | {m.kid:.3f} | {m.inception_score:.2f} | {m.precision:.3f} | "
            f"{m.recall:.3f} | {m.density:.3f} | {m.coverage:.3f} | {m.class_kl:.3f}"
        )

    quality = [
        "| model | FID ↓ | KID ↓ | IS ↑ | precision ↑ | recall ↑ | density | coverage ↑ | "
        "class KL ↓ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| `{name}` | {cells(g)} |" for name, g, _, _ in rows),
        f"| **real vs real (floor)** | {cells(f)} |",
    ]
    speed_rows = [
        "| model | training time | zoo images/s | plain Keras images/s | ratio zoo / plain |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| `{name}` | {seconds:.0f} s | {s['zoo']:.0f} | {s['plain']:.0f} | "
            f"**{s['ratio']:.2f}** |"
            for name, _, seconds, s in rows
        ),
    ]
    k = len(f.class_histogram)
    hist_rows = [
        "| model | " + " | ".join(str(i) for i in range(k)) + " |",
        "|---|" + "---:|" * k,
        *(f"| `{n}` | " + " | ".join(f"{v:.2f}" for v in h) + " |" for n, h in histograms),
        "| real held-out | " + " | ".join(f"{v:.2f}" for v in f.class_histogram) + " |",
    ]
    grids = "\n".join(f"- `{name}`: ![{name}](gan_quality/{name}.png)" for name, *_ in rows)
    body = "\n".join(
        [
            f"Models: every registered GAN ({', '.join(f'`{n}`' for n in names)}), registered "
            f"defaults and default optimizers, dtype policy `{args.precision}`, seed "
            f"{args.seed}. Budget: **{args.steps} "
            f"generator steps each**, {args.batch} real images per discriminator step "
            f"({args.steps * args.batch:,} real images = "
            f"{args.steps * args.batch / len(train_x):.0f} passes over the 4,000 training "
            "digits, for one discriminator step per generator step; the WGANs' critics see "
            "5x as many, as in their papers).",
            "",
            *setups,
            "",
            f"Scores: {args.n} samples from fixed latent points (seed {args.seed}; `cgan`: "
            "labels i mod 10) in the bundled classifier's feature space "
            '(`zoo.metrics.quality`, `feature_extractor="mnist_classifier"`), against '
            f"the {len(train_x)} training digits. The floor is the {len(test_x)} held-out test "
            "digits against the same reference: the best a generator can expect at this sample "
            f"size. k = {evaluator.k} for precision/recall, {evaluator.k_dc} for "
            f"density/coverage; KID = mean over {evaluator.kid_subsets} subsets of "
            f"{min(evaluator.kid_subset_size, args.n)}. Collapse to one class gives class "
            f"KL = log 10 = {np.log(10):.3f}.",
            "",
            *quality,
            "",
            "Class histograms of the samples (share per digit, by the classifier):",
            "",
            *hist_rows,
            "",
            "Training speed: median of "
            f"{args.repeats} interleaved measurements of {args.timing_steps} steps per side, "
            "zoo trainer vs `PlainKerasDCGAN` (bench/dcgan_throughput.py) on copies of the same "
            "generator and discriminator with Adam(2e-4, 0.5) and batch "
            f"{args.batch} (`cgan`: labels fed as i mod 10 to the reference). For `dcgan` and "
            "`gan` (and `cgan`) the two sides run the same algorithm. For `wgan`/`wgan_gp` the "
            "reference still takes one non-saturating D step on the whole (5 x 64-image) batch, "
            "so the ratio "
            "is the cost of the Wasserstein critic loop (5 critic steps, gradient penalty) "
            "relative to that plain step on the same networks, not an overhead of the zoo. "
            f"Training time is the measured {args.steps}-step run (tracing included).",
            "",
            *speed_rows,
            "",
            "## Findings",
            "",
            *findings(rows),
            "",
            "Sample grids (10x10; `cgan` rows run through digits 0-9 left to right):",
            "",
            grids,
            "",
            f"Total wall time: {minutes:.1f} min. Machine load (1-min average, other "
            f"processes included) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at "
            "the end: ratios from one process survive a shared machine better than the "
            "absolute times.",
        ]
    )
    print(body)
    if not args.no_report:
        command = "python -m bench.gan_quality" + (f" {' '.join(argv)}" if argv else "")
        path = write_report("gan_quality", "GAN sample quality at a fixed budget", body, command)
        print(f"\nreport: {path}")


if __name__ == "__main__":
    main()
