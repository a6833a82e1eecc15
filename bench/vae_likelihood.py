"""Test log-likelihood of the zoo's VAEs on the bundled MNIST sample, beside Burda et al.

Trains three Bernoulli models on the 4,000-image train split of the bundled MNIST sample
(dynamically binarised: every pass draws x ~ Bernoulli(pixel intensity)), each with the
settings of its recipe (``RECIPES``; the command-line flags override them):

- ``mlp_vae`` (``mlp_vae_mnist``): Burda et al.'s one-stochastic-layer architecture
  (784-200-200-50, tanh), ELBO with k = 1;
- ``iwae`` (``iwae_mnist``): the same architecture trained on the k = 5
  importance-weighted bound;
- ``vae`` (``vae_mnist``): the convolutional VAE (strided 4x4 convolutions).

Then estimates log p(x) on the 1,000-image test split, binarised once with a fixed seed,
by importance sampling with k = 5000 posterior samples (``zoo.likelihood``), and writes
``bench/reports/vae_likelihood.md`` with sample and interpolation grids in
``bench/reports/vae_likelihood/``.

    python -m bench.vae_likelihood [--epochs N] [--conv-epochs N] [--batch N] [--k 5000]
        [--n-test 1000] [--conv-n-test 300] [--conv-filters 16,32] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import zoo
from bench.common import REPORTS, TRAINING_KEYS, recipe_settings, write_report
from zoo.data import load_sample
from zoo.latent import interpolation_grid, latent_scatter, sample_prior, save_figure, save_grid
from zoo.likelihood import evaluate_likelihood

FIGURES = REPORTS / "vae_likelihood"
#: Digits whose first test images are interpolated (one row per pair).
PAIRS = ((0, 6), (1, 7), (3, 8), (4, 9))
#: Burda et al.'s updates: 3,280 passes over 59,600 images in batches of 20.
BURDA_UPDATES = 3280 * 59600 // 20
#: Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders", Table 1,
#: MNIST, one stochastic layer: the two rows the issue names. The values are quoted from
#: the issue text; the paper's table itself could not be opened from this machine.
BURDA_TABLE_1 = {
    "VAE, k = 1, 1 stochastic layer": 86.76,
    "IWAE, k = 5, 1 stochastic layer": 85.54,
}


#: Model -> the bundled recipe its settings come from (one source of truth: ``zoo train``
#: of the recipe trains what this benchmark measures).
RECIPES = {"mlp_vae": "mlp_vae_mnist", "iwae": "iwae_mnist", "vae": "vae_mnist"}
#: Report labels.
LABELS = {"mlp_vae": "mlp_vae", "iwae": "iwae", "vae": "vae (conv)"}


def model_configs(
    epochs: int | None = None,
    conv_epochs: int | None = None,
    batch: int | None = None,
    conv_filters: tuple[int, ...] | None = None,
) -> dict[str, dict]:
    """Model -> its recipe's settings (``bench.common.recipe_settings``), with the
    command line's overrides (None keeps the recipe's value)."""
    configs = {name: recipe_settings(recipe) for name, recipe in RECIPES.items()}
    for name, config in configs.items():
        conv = "filters" in config or name == "vae"
        given = conv_epochs if conv else epochs
        config["epochs"] = given if given is not None else config["epochs"]
        config["batch_size"] = batch if batch is not None else config["batch_size"]
        if conv and conv_filters is not None:
            config["filters"] = tuple(conv_filters)
    return configs


def describe(name: str, config: dict) -> str:
    """The report's architecture column, from a config."""
    objective = config.get("objective", "iwae" if name == "iwae" else "elbo")
    bound = "IWAE bound" if objective == "iwae" else "ELBO"
    if "filters" in config:
        net = f"conv {tuple(config['filters'])} 4x4 stride 2, latent {config['latent_dim']}"
    else:
        widths = "-".join(str(w) for w in (784, *config["hidden"], config["latent_dim"]))
        net = f"{widths} ({config['activation']})"
    return f"{net}, {bound}, k = {config.get('k', 1)}"


def train_model(name: str, config: dict, train: np.ndarray, seed: int):
    """Build ``name`` from its config and fit it (Adam, the config's rate, batch, epochs)."""
    keras.utils.set_random_seed(seed)
    build = {key: value for key, value in config.items() if key not in TRAINING_KEYS}
    model = zoo.load(name, seed=seed, **build)
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]))
    start = time.perf_counter()
    history = model.fit(
        train, batch_size=config["batch_size"], epochs=config["epochs"], shuffle=True, verbose=0
    )
    seconds = time.perf_counter() - start
    return model, history.history, seconds, int(model.optimizer.iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help="MLP VAE and IWAE epochs (recipe's: 100)")
    parser.add_argument("--conv-epochs", type=int, help="conv VAE epochs (recipe's: 30)")
    parser.add_argument("--batch", type=int, help="batch size (recipes': 50)")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per image")
    parser.add_argument("--n-test", type=int, default=1000, help="test images (MLP models)")
    parser.add_argument(
        "--conv-n-test", type=int, default=300, help="test images (conv VAE), evenly spread"
    )
    parser.add_argument("--conv-filters", help="conv VAE widths, e.g. 32,64 (recipe's: 16,32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, k = 50")
    args = parser.parse_args()
    if args.quick:
        args.epochs = args.conv_epochs = 1
        args.k, args.n_test, args.conv_n_test = 50, 100, 50
    filters = tuple(int(f) for f in args.conv_filters.split(",")) if args.conv_filters else None
    configs = model_configs(args.epochs, args.conv_epochs, args.batch, filters)
    # the values used, for the report
    args.epochs, args.batch = configs["mlp_vae"]["epochs"], configs["mlp_vae"]["batch_size"]
    args.conv_epochs = configs["vae"]["epochs"]
    args.conv_filters = ",".join(str(f) for f in configs["vae"]["filters"])
    args.output_bias = {configs[name].get("output_bias", "zeros") for name in configs}
    wall = time.perf_counter()
    cpu = time.process_time()
    load_start = os.getloadavg()[0]

    train_u8, _ = load_sample("train")
    test_u8, test_labels = load_sample("test")
    train = (train_u8 / 255.0).astype("float32")
    test = (test_u8 / 255.0).astype("float32")

    def spread(n: int) -> np.ndarray:
        """n test indices evenly spread over the split (the file's order is not random)."""
        return np.unique(np.linspace(0, len(test) - 1, min(n, len(test))).round().astype(int))

    FIGURES.mkdir(parents=True, exist_ok=True)
    # interpolation end points: the first test digit of each class in PAIRS (the split is
    # ordered by class, so its first images are all zeros)
    ends = [int(np.flatnonzero(test_labels == digit)[0]) for pair in PAIRS for digit in pair]
    results = {}
    for name, config in configs.items():
        label, epochs, what = LABELS[name], config["epochs"], describe(name, config)
        n_test = args.conv_n_test if name == "vae" else args.n_test
        model, history, train_s, steps = train_model(name, config, train, args.seed)
        index = spread(n_test)
        # binarise the whole split once (the same binary digits for every model), then select
        binary = (np.random.default_rng(args.seed).random(test.shape) < test).astype("float32")
        start = time.perf_counter()
        result = evaluate_likelihood(
            model, binary[index], k=args.k, seed=args.seed, per_example=True, binarize=False
        )
        result["data"] = (
            f"binarised once, stochastically (x ~ Bernoulli(intensity), numpy seed {args.seed})"
        )
        eval_s = time.perf_counter() - start
        slug = name
        save_grid(sample_prior(model, 64, seed=args.seed), FIGURES / f"samples_{slug}.png", 8)
        save_grid(
            interpolation_grid(model, test[ends], steps=10),
            FIGURES / f"interpolation_{slug}.png",
            10,
        )
        results[label] = {
            "name": name, "what": what, "epochs": epochs, "steps": steps, "train_s": train_s,
            "index": index,
            "eval_s": eval_s, "result": result, "final_train_loss": history["loss"][-1],
            "final_train_elbo": history["elbo"][-1],
        }  # fmt: skip
        print(
            f"{label}: {epochs} epochs ({steps} steps) in {train_s:.0f} s; test NLL "
            f"{result['nll']:.2f} nats over {n_test} images (k={args.k}) in {eval_s:.0f} s",
            flush=True,
        )
        if name == "vae":
            fig = latent_scatter(model, test[:1000], test_labels[:1000])
            save_figure(fig, FIGURES / "latent_scatter_vae.png")
    wall = time.perf_counter() - wall
    args.cpu_minutes = (time.process_time() - cpu) / 60
    args.load = (load_start, os.getloadavg()[0])
    body = report(results, args, wall)
    path = write_report(
        "vae_likelihood",
        "VAE test log-likelihood on the bundled MNIST sample (importance sampling)",
        body,
        "python -m bench.vae_likelihood" + (" --quick" if args.quick else ""),
    )
    print(f"report: {path}")


def observe(results: dict) -> str:
    """Facts computed from the results, for the report's discussion."""
    lines = []
    vae, iwae = results.get("mlp_vae"), results.get("iwae")
    if vae and iwae and vae["index"].tolist() == iwae["index"].tolist():
        a = np.asarray(vae["result"]["log_likelihood_per_example"])
        b = np.asarray(iwae["result"]["log_likelihood_per_example"])
        diff = -(b - a)
        se = diff.std(ddof=1) / math.sqrt(len(diff))
        lines.append(
            f"- IWAE (k = 5) minus VAE, same architecture, test NLL paired over "
            f"{len(diff)} images: **{diff.mean():+.2f} ± {se:.2f} nats** (Burda et al.: "
            f"85.54 - 86.76 = -1.22 nats on full MNIST, unverified values)."
        )
        lines.append(
            f"- Active units: VAE {vae['result']['active_units']} of "
            f"{vae['result']['latent_dim']}, IWAE {iwae['result']['active_units']} of "
            f"{iwae['result']['latent_dim']} (the paper reports that IWAE uses more latent "
            "dimensions than the VAE)."
        )
        lines.append(
            f"- ELBO vs log-likelihood: IWAE -ELBO {-iwae['result']['elbo']:.2f} and NLL "
            f"{iwae['result']['nll']:.2f}; VAE -ELBO {-vae['result']['elbo']:.2f} and NLL "
            f"{vae['result']['nll']:.2f} nats. The IWAE optimises a different bound than the "
            "ELBO, so its ELBO need not be the better one."
        )
    for label, r in results.items():
        res = r["result"]
        gap = res["gap"]
        overfit = -res["elbo"] + r["final_train_elbo"]
        lines.append(
            f"- {label}: gap log p(x) - ELBO = {gap:.2f} nats"
            + (" (positive: the ELBO is a lower bound)" if gap > 0 else " (NOT positive)")
            + f"; test -ELBO minus last-epoch training -ELBO = {overfit:.2f} nats"
            + (" (the model fits its 4,000 training digits better)" if overfit > 0 else "")
            + "."
        )
    if vae:
        lines.append(
            f"- MLP VAE test NLL {vae['result']['nll']:.2f} nats vs 86.76 in the paper: "
            f"{vae['result']['nll'] - 86.76:+.2f} nats, with 15x less data and "
            f"{100 * vae['steps'] / BURDA_UPDATES:.3f}% of the updates."
        )
    return "\n".join(lines)


def report(results: dict, args: argparse.Namespace, wall: float) -> str:
    subset = functools.reduce(np.intersect1d, [r["index"] for r in results.values()])
    n_sub = len(subset)
    columns = [
        "model", "architecture, objective", "epochs", "test images", "test NLL (nats) ± s.e.",
        "bits/dim", "test -ELBO", "gap", "train -ELBO (last epoch)", "active units", "eval time",
    ]  # fmt: skip
    header = "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|"
    rows = []
    for label, r in results.items():
        res = r["result"]
        rows.append(
            f"| {label} | {r['what']} | {r['epochs']} ({r['steps']} steps, {r['train_s']:.0f} s) "
            f"| {res['n']} | **{res['nll']:.2f}** ± {res['nll_stderr']:.2f} | "
            f"{res['bits_per_dim']:.4f} | {-res['elbo']:.2f} | {res['gap']:.2f} | "
            f"{-r['final_train_elbo']:.2f} | "
            f"{res['active_units']} / {res['latent_dim']} | {r['eval_s']:.0f} s |"
        )
    per_model = {}
    for label, r in results.items():
        where = {int(i): j for j, i in enumerate(r["index"])}
        pick = [where[int(i)] for i in subset]
        per_model[label] = (
            np.asarray(r["result"]["log_likelihood_per_example"])[pick],
            np.asarray(r["result"]["elbo_per_example"])[pick],
        )
    reference = per_model[next(iter(per_model))][0]
    subset_rows = []
    for label, (lp, el) in per_model.items():
        se = lp.std(ddof=1) / math.sqrt(len(lp)) if len(lp) > 1 else float("nan")
        diff = -(lp - reference)
        dse = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        paired = "0 (reference)" if not np.any(diff) else f"{diff.mean():+.2f} ± {dse:.2f}"
        subset_rows.append(
            f"| {label} | {-lp.mean():.2f} ± {se:.2f} | {paired} | {-el.mean():.2f} |"
        )
    observations = observe(results)
    first = next(iter(results))
    burda = "\n".join(f"| {row} | {value:.2f} |" for row, value in BURDA_TABLE_1.items())
    figures = "\n".join(
        f"- {label}: samples from the prior ![samples](vae_likelihood/samples_{r['name']}.png) "
        f"and slerp interpolations between test digits (rows: "
        + ", ".join(f"{a} to {b}" for a, b in PAIRS)
        + ") "
        f"![interpolation](vae_likelihood/interpolation_{r['name']}.png)"
        for label, r in results.items()
    )
    return f"""
## Setup

- **Data**: the bundled MNIST sample (`zoo/data/sample`, 5,000 real MNIST digits): its
  stratified train split (**4,000 images**) for training, its test split (1,000 images) for
  evaluation. Training images are **dynamically binarised** (every pass draws
  x ~ Bernoulli(intensity), as Burda et al. did); test images are **binarised once** with
  numpy seed {args.seed} (stochastic binarisation). Likelihood: Bernoulli. Results are in
  nats per image; bits/dim = NLL / (784 ln 2).
- **Estimator**: `zoo.likelihood.evaluate_likelihood`: log p(x) ~ log (1/k) sum_i
  p(x|z_i) p(z_i) / q(z_i|x) with **k = {args.k}** samples z_i ~ q(z|x) per image
  (Burda et al. used k = 5000 too), chunked, stable log-sum-exp. ELBO = analytic-KL ELBO
  over the same samples; gap = log p(x) - ELBO; active units: Cov_x(E_q[z_j]) > 0.01.
- **Training budget**: the recipes' settings (`mlp_vae_mnist`, `iwae_mnist`,
  `vae_mnist`; `zoo train` of each trains the same model): Adam, learning rate 1e-3, batch
  {args.batch}; MLP VAE and IWAE {args.epochs} epochs, conv VAE {args.conv_epochs} epochs
  (steps and seconds below); output bias {" / ".join(sorted(args.output_bias))}
  (`data_mean`: the decoder's output bias starts at the logit of the mean pixel of the
  first training batch, as Burda et al.'s code starts it at the training mean).
  Seed {args.seed}. Whole benchmark: **{wall / 60:.1f} min** wall time,
  {args.cpu_minutes:.1f} min of CPU time over the 2 cores (load average
  {args.load[0]:.1f} at the start and {args.load[1]:.1f} at the end: other jobs shared
  the machine when the load exceeds 2).
- **Conv VAE**: its k = 5000 estimate runs on {n_sub} of the 1,000 test images (evenly
  spread over the split), because its decoder is about 10x slower per sample than the MLP's
  on these 2 CPU cores and 1,000 x 5,000 decodes would not fit the 15-minute budget; its
  widths are {args.conv_filters} (the recipe's) instead of the registered default (32, 64)
  for the same reason. The second table compares all three models on those same images.

## Results (test split, k = {args.k})

{header}
{chr(10).join(rows)}

"± s.e." is the standard error of the mean over test images (digits differ a lot in
difficulty); "gap" = log p(x) - ELBO, the looseness of the bound; "train -ELBO" is the
training loss of the last epoch (dynamically binarised training digits): below the test
-ELBO, it shows how much the models overfit 4,000 digits.

The same {n_sub} test images (evenly spread over the split) for all three models; the
paired difference to the MLP VAE has a much smaller standard error than the NLLs
themselves:

| model | test NLL (nats) ± s.e. | NLL minus MLP VAE's (paired) ± s.e. | test -ELBO |
|---|---|---|---|
{chr(10).join(subset_rows)}

## Burda et al. (2015), Table 1 (MNIST, one stochastic layer, NLL in nats)

| row | NLL |
|---|---|
{burda}

**Verification.** These two values are quoted from the issue; the paper's Table 1 could
not be opened from this machine (the search index returned only the paper's abstract), so
they are **not verified here**. What was verified, from the authors' code
(github.com/yburda/iwae, `experiments.py`, `iwae.py`, `README.md`): the one-layer
architecture (two deterministic layers of 200 tanh units, 50 latent units, Bernoulli
output), Adam starting at 1e-3 with batch 20 for 3^0 + ... + 3^7 = 3,280 passes over the
data, the test log-likelihood with 5,000 importance samples, the active-unit threshold of
0.01, and the data: "a random binarization every time a binary sample was given to the
model, and 59600 MNIST examples were used for training".

**How to read the comparison.** Burda et al. trained on **59,600** images for 3,280 epochs
(about 9.8 million batches of 20); here the models see **4,000** images (15x fewer) for
{args.epochs} epochs ({results[first]["steps"]} batches of {args.batch}:
{100 * results[first]["steps"] / BURDA_UPDATES:.3f}% of their updates), so higher NLLs are
expected, and a model of this size can overfit 4,000 digits. The useful checks are the
orderings the paper reports, not equality with its numbers. Observed here:

{observations}

## Figures

{figures}
- conv VAE latent space (PCA of 16-D posterior means of 1,000 test digits, by label):
  ![scatter](vae_likelihood/latent_scatter_vae.png)
"""


if __name__ == "__main__":
    main()
