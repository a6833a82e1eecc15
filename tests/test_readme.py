"""The README's code blocks, run as written, so the README cannot drift from the code.

README.md is read when the tests are collected and split into its fenced ```bash and
```python blocks. Every block is either run or excused here with a reason, and
``test_every_block_is_run_or_excused`` fails when a new block (or a new command
program) is neither: add a rule or an excuse for it.

Rules, all in one temporary working folder shared by the tests of this module:

- Shell blocks: each command (``&&`` chains split, ``\\`` continuations joined,
  ``#`` comments dropped) whose program is ``zoo`` runs in-process through
  ``zoo.cli.main`` and must exit 0. Tiny settings are appended, so they win over the
  README's own sizes: ``zoo train`` gets :data:`TRAIN_TINY`, ``zoo evaluate`` gets
  :data:`EVALUATE_TINY`. Placeholders the README asks the reader to replace
  (:data:`PLACEHOLDERS`) become real folders the test writes. Commands of the
  programs in :data:`EXCUSED_PROGRAMS` (and ``zoo`` subcommands in
  :data:`EXCUSED_ZOO`) are not run; the reason is given there.
- Shell commands run first, in README order, as a reader would run them before the
  Python examples that load their run folders (``runs/vae_mnist``); the tests of this
  module therefore depend on running in file order, as pytest runs them (selecting a
  later one alone with ``-k`` fails for want of the run folders).
- Python blocks run statement by statement, as written (same model names and sizes),
  in a namespace holding the names they assume (``dataset``, ``normal_train``, ``x``,
  ...) as small real data from the bundled MNIST sample (:data:`PYTHON_BLOCKS`). The
  one statement that needs the network (a TFDS download) runs offline, with DNS
  lookups failing, and must raise the documented ``DataError`` naming the cause.
"""

from __future__ import annotations

import ast
import re
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

TRAIN_TINY = [
    "--set", "epochs=1",
    "--set", "training.steps_per_epoch=2",
    "--set", "training.verbose=0",
    "--set", "logging.num_samples=4",
    "--set", "logging.quality_samples=64",
    "--set", "data.batch_size=8",
]  # fmt: skip
EVALUATE_TINY = ["--n", "64", "--k", "4"]
#: Network sizes appended for recipes whose full model is too slow to trace and sample in the
#: suite: the diffusion recipes train a one-level U-Net on a 100-step schedule here (their
#: three-level U-Net's first traced step alone takes ~25 s on 2 cores).
TRAIN_TINY_MODEL = {
    recipe: [
        "--set", "model_config.widths=[8]",
        "--set", "model_config.attention_resolutions=[]",
        "--set", "model_config.num_steps=100",
        "--set", "model_config.sample_steps=5",
    ]
    for recipe in ("ddpm_mnist", "cddpm_mnist")
}  # fmt: skip
#: The image-to-image recipes' networks at test size (SRGAN loads the SRResNet run's weights,
#: so both shrink alike).
TRAIN_TINY_MODEL.update(
    {
        recipe: ["--set", "model_config.generator_filters=8", "--set", "model_config.n_blocks=1"]
        for recipe in ("srresnet_x4", "srgan_x4")
    }
)
TRAIN_TINY_MODEL["cyclegan_digits2animals"] = [
    "--set", "model_config.filters=8", "--set", "model_config.n_blocks=1",
]  # fmt: skip
PLACEHOLDERS = {"/path/to/cat/faces": "cat_faces"}  # -> a folder of 20 RGB images

EXCUSED_PROGRAMS = {
    "make": "`make demo` and `make test` are the demo and this test suite themselves "
    "(tests/test_demo.py runs the demo's path)",
    "tensorboard": "a third-party server that runs until stopped; the event files it "
    "reads are written by the `zoo train` lines run here",
    "curl": "asks a server on port 8501 filled by `make demo`; tests/test_serving.py "
    "sends the same REST requests to a real `zoo serve`",
    "docker": "no Docker engine here; serving/Dockerfile and docker-compose.yml are checked "
    "by tests/test_container_files.py",
    "docs/cluster/launch_local.sh": "starts worker processes that train together; "
    "tests/test_multi_worker.py runs two such workers (TF_CONFIG on 127.0.0.1) and the "
    "launcher's DRY_RUN",
    "kubectl": "no Kubernetes cluster here; tests/test_multi_worker.py parses "
    "docs/cluster/k8s-job.yaml and runs its pod shell",
}
EXCUSED_ZOO = {
    "serve": "runs until stopped, on the models `make demo` exports; tests/test_serving.py "
    "starts a real `zoo serve` on exported models",
}


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    code: str

    @property
    def key(self) -> str:
        """The block's first code line: what identifies it in this file's tables."""
        return next(line.strip() for line in self.code.splitlines() if line.strip())


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced code blocks of the README, with their language."""
    text = README.read_text() if text is None else text
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and lang is None:
            lang, start, body = fence.group(1) or "text", number, []
        elif line.startswith("```") and lang is not None:
            blocks.append(Block(lang, start, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md: the code block opened at line {start} is not closed"
    return blocks


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a shell block as argv lists."""
    joined = re.sub(r"\\\n", " ", block.code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1 :]
    return commands


def excuse(argv: list[str]) -> str | None:
    """Why a command is not run, or None if it is."""
    if argv[0] == "zoo" and len(argv) > 1:
        return EXCUSED_ZOO.get(argv[1])
    return EXCUSED_PROGRAMS.get(argv[0])


BLOCKS = readme_blocks()
COMMANDS = [
    (block, argv) for block in BLOCKS if block.lang == "bash" for argv in shell_commands(block)
]
RUN_COMMANDS = [(block, argv) for block, argv in COMMANDS if excuse(argv) is None]


# --------------------------------------------------------------------------- data


def _sample(n: int, digits: list[int] | None = None, split: str = "train") -> tuple[Any, Any]:
    from zoo.data import load_sample

    images, labels = load_sample(split)
    if digits is not None:
        keep = np.isin(labels, digits)
        images, labels = images[keep], labels[keep]
    return images[:n], labels[:n]


def _floats(images: np.ndarray) -> np.ndarray:
    return (images / 255.0).astype("float32")


def _keras_names(workdir: Path) -> dict[str, Any]:
    import tensorflow as tf

    images, _ = _sample(4)  # one batch: fit's 5 epochs are 5 steps
    rgb = tf.image.resize(np.repeat(_floats(images), 3, axis=-1), (64, 64)).numpy()
    return {"dataset": tf.data.Dataset.from_tensor_slices(rgb.clip(0, 1)).batch(4)}


def _anomaly_names(workdir: Path) -> dict[str, Any]:
    normal_train, _ = _sample(64, [3])
    normal_heldout, _ = _sample(100, [3], "test")
    threes, others = _sample(84, [3])[0][64:], _sample(100, [0, 1, 2, 4, 5, 6])  # unseen
    x_test = np.concatenate([threes, others[0]])
    digits = np.concatenate([np.full(len(threes), 3), others[1]])
    return {
        "zoo": __import__("zoo"),
        "normal_train": _floats(normal_train),
        "normal_heldout": _floats(normal_heldout),
        "x": _floats(x_test[:16]),
        "x_test": _floats(x_test),
        "labels": (digits != 3).astype("int64"),
    }


def _data_names(workdir: Path) -> dict[str, Any]:
    x, y = _sample(64)
    return {"x": x, "y": y}


def _export_names(workdir: Path) -> dict[str, Any]:
    import zoo

    normal_heldout, _ = _sample(100, [3], "test")
    return {
        "model": zoo.load("conv_ae", weights="runs/conv_ae_mnist"),
        "normal_heldout": _floats(normal_heldout),
    }


def _check_keras(ns: dict[str, Any]) -> None:
    images = np.asarray(ns["images"])
    assert images.shape == (16, 64, 64, 3) and images.min() >= 0 and images.max() <= 1
    assert "dcgan" in ns["zoo"].list_models()
    assert type(ns["again"]).__name__ == "GAN" and type(ns["vae"]).__name__ == "VAE"
    assert ns["vae"].latent_dim == 8  # as trained by `zoo train vae_mnist ... latent_dim=8`


def _check_anomaly(ns: dict[str, Any]) -> None:
    assert np.asarray(ns["verdicts"]).shape == (16,)
    assert 0.0 <= ns["report"].auroc <= 1.0
    assert all((Path("eval") / f).is_file() for f in ("report.md", "report.json", "scores.png"))


def _check_data(ns: dict[str, Any]) -> None:
    images = next(iter(ns["batches"]))
    assert tuple(images.shape) == (64, 28, 28, 1)


def _check_export(ns: dict[str, Any]) -> None:
    assert Path("serving/models/conv_ae").is_dir()


def _distributed_names(workdir: Path) -> dict[str, Any]:
    import tensorflow as tf

    images, _ = _sample(16)  # one global batch of 16: 8 per logical CPU device
    return {"digits": tf.data.Dataset.from_tensor_slices(_floats(images)).batch(16)}


def _check_distributed(ns: dict[str, Any]) -> None:
    model, strategy = ns["model"], ns["strategy"]
    assert model.distribute_strategy is strategy  # built in the user's scope
    assert strategy.num_replicas_in_sync == 2  # the two logical CPUs of tests/conftest.py
    assert all(optimizer.built for optimizer in model.optimizers.values())
    losses = model.history.history["g_loss"]
    assert len(losses) == 5 and np.all(np.isfinite(losses))
    assert np.asarray(ns["images"]).shape == (16, 28, 28, 1)


@dataclass(frozen=True)
class PythonBlock:
    names: Callable[[Path], dict[str, Any]]  # what the block assumes exists
    check: Callable[[dict[str, Any]], None]  # what its comments promise
    offline: tuple[str, ...] = ()  # statements that fail offline, with the documented error


def _no_names(workdir: Path) -> dict[str, Any]:
    return {}


def _check_diffusion(ns: dict[str, Any]) -> None:
    images, varied = np.asarray(ns["images"]), np.asarray(ns["varied"])
    assert images.shape == (16, 28, 28, 1) and images.min() >= 0.0 and images.max() <= 1.0
    again = np.asarray(ns["model"].generate(ns["z"], steps=20))
    np.testing.assert_array_equal(images, again)  # "deterministic in z"
    assert np.abs(varied - np.asarray(ns["model"].generate(ns["z"], steps=50))).max() > 0
    assert np.asarray(ns["ancestral"]).shape == (4, 28, 28, 1)
    assert set(ns["step"]) == {"eps", "denoised"}
    assert np.asarray(ns["step"]["eps"]).shape == (2, 28, 28, 1)


def _check_translation(ns: dict[str, Any]) -> None:
    assert np.asarray(ns["upscaled"]).shape == (1, 160, 96, 3)  # "any size"
    drawn = np.asarray(ns["drawn"])
    assert drawn.shape == (8, 32, 32, 1) and drawn.min() >= 0.0 and drawn.max() <= 1.0
    np.testing.assert_array_equal(drawn, np.asarray(ns["pix2pix"].translate(ns["outlines"])))


PYTHON_BLOCKS: dict[str, PythonBlock | str] = {
    "from zoo.data import bundled_task": PythonBlock(_no_names, _check_translation),
    "import numpy as np": PythonBlock(_no_names, _check_diffusion),
    "import zoo": PythonBlock(_keras_names, _check_keras),
    "from zoo.anomaly import AnomalyDetector": PythonBlock(_anomaly_names, _check_anomaly),
    "from zoo import data": PythonBlock(
        _data_names, _check_data, offline=('data.make_dataset("tfds"',)
    ),
    "from zoo.export import export_model": PythonBlock(_export_names, _check_export),
    "import tensorflow as tf": PythonBlock(_distributed_names, _check_distributed),
    "from zoo.serving.client import ServingClient, GrpcServingClient": (
        "needs a server on 127.0.0.1:8501 (REST) and 8500 (gRPC); tests/test_grpc_server.py "
        "runs the same contract through both clients against a real `zoo serve`"
    ),
}


# --------------------------------------------------------------------------- tests


def test_every_block_is_run_or_excused() -> None:
    assert BLOCKS, "no code blocks found in README.md"
    problems = [
        f"README.md:{b.line}: a ```{b.lang or 'plain'} block (run or excuse it here)"
        for b in BLOCKS
        if b.lang not in ("bash", "python")
    ]
    problems += [
        f"README.md:{b.line}: python block {b.key!r} has no entry in PYTHON_BLOCKS"
        for b in BLOCKS
        if b.lang == "python" and b.key not in PYTHON_BLOCKS
    ]
    problems += [
        f"README.md:{b.line}: `{' '.join(argv)}` is neither run (program `zoo`) nor excused"
        for b, argv in COMMANDS
        if argv[0] != "zoo" and excuse(argv) is None
    ]
    assert not problems, "\n".join(problems)
    assert len([c for c in RUN_COMMANDS if c[1][1] == "train"]) >= 5


def test_parsing_splits_chains_and_continuations() -> None:
    text = (
        "x\n```bash\nzoo a --b 1   # note\ncurl -s \\\n  host && zoo c\n```\n```python\nx = 1\n```"
    )
    bash, python = readme_blocks(text)
    assert (bash.lang, bash.line, python.lang, python.key) == ("bash", 2, "python", "x = 1")
    assert shell_commands(bash) == [["zoo", "a", "--b", "1"], ["curl", "-s", "host"], ["zoo", "c"]]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reader's working folder: a cat-faces folder for the placeholder, a `cats/`
    folder for the Data example."""
    from PIL import Image

    root = tmp_path_factory.mktemp("readme")
    images, _ = _sample(20)
    for folder in (*PLACEHOLDERS.values(), "cats"):
        (root / folder).mkdir()
        for i, image in enumerate(images):
            rgb = np.repeat(image, 3, axis=-1)
            Image.fromarray(rgb).resize((40, 40)).save(root / folder / f"{i:02d}.png")
    return root


def _as_run(argv: list[str], workdir: Path) -> list[str]:
    argv = argv[1:]
    for placeholder, folder in PLACEHOLDERS.items():
        argv = [word.replace(placeholder, str(workdir / folder)) for word in argv]
    if argv[0] == "train":
        argv += TRAIN_TINY + TRAIN_TINY_MODEL.get(argv[1], [])
    elif argv[0] == "evaluate":
        argv += EVALUATE_TINY
    return argv


@pytest.mark.parametrize(
    "block, argv",
    RUN_COMMANDS,
    ids=[f"L{block.line}:{' '.join(argv[1:])[:60]}" for block, argv in RUN_COMMANDS],
)
def test_readme_command(
    block: Block, argv: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from zoo.cli import main

    monkeypatch.chdir(workdir)
    code = main(_as_run(argv, workdir))
    err = capsys.readouterr().err
    assert code == 0, f"README.md:{block.line}: `{' '.join(argv)}` exited {code}:\n{err[-2000:]}"


PY_BLOCKS = [  # the excused ones (a reason instead of a PythonBlock) are not run
    b for b in BLOCKS if b.lang == "python" and not isinstance(PYTHON_BLOCKS.get(b.key), str)
]


@pytest.mark.parametrize("block", PY_BLOCKS, ids=[f"L{b.line}" for b in PY_BLOCKS])
def test_readme_python_block(block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PYTHON_BLOCKS.get(block.key)
    if not isinstance(spec, PythonBlock):
        pytest.fail(f"README.md:{block.line}: python block {block.key!r} is not in PYTHON_BLOCKS")
    from zoo.data import DataError

    monkeypatch.chdir(workdir)
    namespace = spec.names(workdir)
    for statement in ast.parse(block.code).body:
        source = ast.get_source_segment(block.code, statement) or ""
        code = compile(ast.Module([statement], []), f"README.md:{block.line}", "exec")
        if any(marker in source for marker in spec.offline):
            with monkeypatch.context() as offline:
                offline.setattr(socket, "getaddrinfo", _no_dns)
                with pytest.raises(DataError, match="no network"):
                    exec(code, namespace)
            continue
        exec(code, namespace)
    spec.check(namespace)


def _no_dns(host: str, *args: object, **kwargs: object) -> None:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_readme_keras_load_model_line(workdir: Path) -> None:
    """The prose under the first Python block: a bare `import zoo` imports no TensorFlow,
    and `keras.saving.load_model("dcgan.keras")` works after
    `zoo.registry.load_model_modules()`, in a fresh process (on the file that block saved)."""
    import subprocess
    import sys

    text = README.read_text()
    assert 'keras.saving.load_model("dcgan.keras")' in text
    assert "zoo.registry.load_model_modules()" in text
    assert (workdir / "dcgan.keras").is_file(), "run the first Python block first"
    script = (
        "import sys\n"
        "import zoo\n"
        "assert 'tensorflow' not in sys.modules, 'import zoo imported TensorFlow'\n"
        "zoo.registry.load_model_modules()\n"
        "import keras\n"
        'model = keras.saving.load_model("dcgan.keras")\n'
        "print(type(model).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "GAN"
