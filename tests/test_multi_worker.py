"""``zoo train --strategy multi_worker``: two local worker processes with ``TF_CONFIG`` on
127.0.0.1 (each process one CPU device), the custom loop of
:mod:`zoo.recipes.distributed_loop`, a killed worker and ``--resume``; and that loop
in-process against ``fit`` on the two logical CPUs of ``tests/conftest.py``.

One sequence of runs serves the multi-process tests (module fixture ``runs``): two workers,
worker 1 killing itself (SIGKILL) right after the epoch-2 checkpoint, while the test's own
process trains the same recipe on one device; then both workers again with ``--resume`` to
the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from recipe_helpers import recipe_toml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "docs" / "cluster"
EPOCHS, KILL_AFTER_EPOCH = 4, 2
# A global batch of 32 leaves a last validation batch of 8 of the bundled 1,000 digits:
# split over the workers, it must give the one-device values (and noise draws) too.
DATA = 'source = "sample"\nbatch_size = 32'
TIMEOUT_SECONDS = 30  # distribute.timeout_seconds: a collective's longest wait for a peer
PROCESS_TIMEOUT = 240  # a hung test fails instead of hanging the suite

# One worker: `zoo train` through zoo.cli.main, with a callback that saves the final
# weights (the non-chief's own folder is removed, so the test could not read them) and,
# when asked, kills this process right after an epoch's checkpoint.
WORKER = textwrap.dedent(
    """
    import os, signal, sys
    import keras, numpy as np
    import zoo.recipes
    from zoo.cli import main

    weights_path, kill_after = sys.argv[1], int(sys.argv[2])

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # after CheckpointEveryEpoch's save
            if epoch + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, logs=None):
            np.savez(weights_path, *[w.numpy() for w in self.model.weights])

    train = zoo.recipes.train
    zoo.recipes.train = lambda *args, **kwargs: train(*args, callbacks=[Probe()], **kwargs)
    sys.exit(main(["train", *sys.argv[3:]]))
    """
)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """Starts the recipe's two workers and collects what they left."""

    def __init__(self, root: Path):
        self.root = root
        self.script = root / "worker.py"
        self.script.write_text(WORKER)
        self.recipe = root / "mw.toml"
        self.recipe.write_text(
            recipe_toml("mw", "dcgan_tiny", epochs=EPOCHS, data=DATA, logging="num_samples = 4")
        )

    def tmp(self, name: str) -> Path:
        """The run's TMPDIR: where a non-chief worker's folder would be left."""
        return self.root / f"tmp_{name}"

    def start(self, name: str, index: int, hosts: list[str], args: list[str], kill: int = 0):
        """Worker ``index`` of ``hosts`` (output to ``<name>.out`` and ``<name>.err``)."""
        self.tmp(name).mkdir()
        env = {**os.environ, "TMPDIR": str(self.tmp(name)), "TF_CPP_MIN_LOG_LEVEL": "2"}
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        )
        command = [sys.executable, str(self.script), str(self.root / f"{name}.npz"), str(kill)]
        command += [str(self.recipe), "--logdir", str(self.root / "runs"), "--strategy"]
        command += ["multi_worker", "--set", f"distribute.timeout_seconds={TIMEOUT_SECONDS}"]
        with (
            open(self.root / f"{name}.out", "wb") as out,
            open(self.root / f"{name}.err", "wb") as err,
        ):
            return subprocess.Popen([*command, *args], env=env, stdout=out, stderr=err)

    def launch(self, tag: str, args: list[str], kill: int = 0) -> dict:
        """Start workers 0 and 1 (worker 1 killing itself after epoch ``kill``); threads
        note when each exits."""
        hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
        procs = [self.start(f"{tag}{i}", i, hosts, args, kill if i == 1 else 0) for i in range(2)]
        ended: dict[int, float] = {}

        def watch(i: int) -> None:
            try:
                procs[i].wait(timeout=PROCESS_TIMEOUT)
            except subprocess.TimeoutExpired:
                procs[i].kill()  # a hung test fails instead of hanging the suite
                procs[i].wait()
            ended[i] = time.monotonic()

        threads = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        return {"tag": tag, "hosts": hosts, "procs": procs, "ended": ended, "threads": threads}

    def collect(self, run: dict) -> dict:
        """Wait for a launched pair; their exit codes, output and end times."""
        for thread in run["threads"]:
            thread.join()
        names = [f"{run['tag']}{i}" for i in range(2)]
        return {
            "hosts": run["hosts"],
            "returncodes": [proc.returncode for proc in run["procs"]],
            "stdout": [(self.root / f"{n}.out").read_text(errors="replace") for n in names],
            "stderr": [(self.root / f"{n}.err").read_text(errors="replace") for n in names],
            "ended": run["ended"],
        }

    def weights(self, name: str) -> list[np.ndarray]:
        with np.load(self.root / f"{name}.npz") as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from zoo.recipes import train

    cluster = Cluster(tmp_path_factory.mktemp("multi_worker"))
    killed = cluster.launch("killed", [], kill=KILL_AFTER_EPOCH)
    # Meanwhile, the same recipe in this process on one device (the default strategy).
    single = train(cluster.recipe, logdir=cluster.root / "runs", run_name="single")
    killed = cluster.collect(killed)
    checkpoints = cluster.root / "runs" / "mw" / "checkpoints"
    checkpoints_after_kill = sorted(p.name for p in checkpoints.iterdir())
    resumed = cluster.collect(cluster.launch("resumed", ["--resume"]))
    return {
        "cluster": cluster,
        "single": single,
        "killed": killed,
        "resumed": resumed,
        "checkpoints_after_kill": checkpoints_after_kill,
    }


def test_a_killed_worker_fails_the_run_with_a_clear_message(runs: dict) -> None:
    killed = runs["killed"]
    assert killed["returncodes"][1] == -9  # worker 1 killed itself after epoch 2's checkpoint
    assert killed["returncodes"][0] == 2, killed["stderr"][0][-3000:]  # a user error, one line
    expected = (
        f"worker 1 ({killed['hosts'][1]}) stopped responding; restart every worker with "
        f"--resume to continue from the last checkpoint (epoch {KILL_AFTER_EPOCH})"
    )
    assert f"zoo train: error: {expected}" in killed["stderr"][0]
    assert "Traceback" not in killed["stderr"][0]
    waited = killed["ended"][0] - killed["ended"][1]
    assert 0 <= waited < TIMEOUT_SECONDS + 10, f"worker 0 took {waited:.1f} s to fail"
    assert "ckpt-2.index" in runs["checkpoints_after_kill"]
    assert "ckpt-3.index" not in runs["checkpoints_after_kill"]


def test_resumed_workers_finish_with_equal_weights_matching_one_process(runs: dict) -> None:
    resumed, cluster = runs["resumed"], runs["cluster"]
    assert resumed["returncodes"] == [0, 0], resumed["stderr"][0][-3000:]
    for out in resumed["stdout"]:
        assert f"from epoch {KILL_AFTER_EPOCH + 1} of {EPOCHS}" in out
    worker0, worker1 = cluster.weights("resumed0"), cluster.weights("resumed1")
    single = runs["single"].model
    assert len(worker0) == len(worker1) == len(single.weights) > 0
    # Every epoch's losses, validation included, are the one-device run's (the same global
    # batches and noise), to float rounding of the sums over two replicas.
    history = json.loads((cluster.root / "runs" / "mw" / "history.json").read_text())
    assert sorted(history) == sorted(runs["single"].history)
    for key, values in runs["single"].history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-4, atol=5e-5, err_msg=key)
    for a, b, c in zip(worker0, worker1, single.weights, strict=True):
        np.testing.assert_array_equal(a, b)  # one all-reduced update on every worker
        # Adam moves a weight by up to its learning rate (2e-4) per step whatever the
        # gradient's size, so where a gradient is near 0 its rounding shows at that scale.
        np.testing.assert_allclose(a, c.numpy(), atol=5e-4)


def summary_counts(folder: Path) -> dict[str, int]:
    """How many values of each tag the event files in ``folder`` hold (hyper-parameters
    left out: they are written once per start, and the chief started twice)."""
    import tensorflow as tf

    counts: dict[str, int] = {}
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:  # hparams: once per start, not per epoch
                if not value.tag.startswith("_hparams_"):
                    counts[value.tag] = counts.get(value.tag, 0) + 1
    return counts


def test_only_the_chief_writes_the_run_folder_as_one_process_would(runs: dict) -> None:
    """The run's callbacks ran in the loop as in fit: history, TensorBoard batch and epoch
    scalars (validation included), grids, model.keras, over the killed and resumed runs."""
    cluster = runs["cluster"]
    run, single = cluster.root / "runs" / "mw", cluster.root / "runs" / "single"
    history = json.loads((run / "history.json").read_text())
    assert len(history["d_loss"]) == len(history["val_d_loss"]) == EPOCHS
    assert (run / "model.keras").is_file()
    for part in ("train", "validation"):
        counts = summary_counts(run / part)
        assert counts == summary_counts(single / part), part
    assert counts["epoch_g_loss"] == EPOCHS  # validation
    assert summary_counts(run / "train")["batch_g_loss"] == EPOCHS * 3  # 3 steps per epoch
    assert sorted(p.name for p in (cluster.root / "runs").iterdir()) == ["mw", "single"]
    for name in ("resumed0", "resumed1"):  # the workers' own folders are gone (autograph's stay)
        assert [p.name for p in cluster.tmp(name).glob("zoo-*")] == []
    # the killed worker could not clean up: its folder is the only one left
    left = [p.name for p in cluster.tmp("killed1").glob("zoo-*")]
    assert len(left) == 1 and left[0].startswith("zoo-worker1-mw"), left


# -- naming the dead worker ------------------------------------------------------------
class FakeResolver:
    """What ``_failed_worker`` reads of a ``MultiWorkerMirroredStrategy``'s resolver."""

    def __init__(self, workers: list[str], task_id: int):
        self.task_type, self.task_id, self.workers = "worker", task_id, workers

    def cluster_spec(self):
        import tensorflow as tf

        return tf.train.ClusterSpec({"worker": self.workers})


def test_a_failed_collective_names_the_worker_and_the_checkpoint_to_resume_from() -> None:
    import tensorflow as tf
    from zoo.recipes.distributed_loop import WorkerFailedError, _failed_worker

    hosts = ["h0:1", "h1:2", "h2:3"]
    strategy = type("Strategy", (), {"cluster_resolver": FakeResolver(hosts, 0)})()
    named = tf.errors.UnavailableError(None, None, "Error from /job:worker/replica:0/task:2: x")
    assert _failed_worker(named, strategy) == "worker 2 (h2:3)"
    anonymous = tf.errors.DeadlineExceededError(None, None, "Collective timed out")
    assert _failed_worker(anonymous, strategy) == (
        "one of the other workers [worker 1 (h1:2), worker 2 (h2:3)]"
    )
    not_a_peer = tf.errors.InternalError(None, None, "Blas GEMM launch failed")
    assert _failed_worker(not_a_peer, strategy) is None  # re-raised as it is
    alone = type("Strategy", (), {"cluster_resolver": FakeResolver(["h0:1"], 0)})()
    assert _failed_worker(named, alone) is None
    assert str(WorkerFailedError("worker 2 (h2:3)", 0, "cause")).startswith(
        "worker 2 (h2:3) stopped responding; no epoch finished, so restart every worker "
        "without --resume"
    )


# -- the launcher and the Kubernetes example (no TensorFlow) ----------------------------
def test_launch_local_gives_every_worker_its_task_in_one_cluster() -> None:
    env = {**os.environ, "DRY_RUN": "1", "BASE_PORT": "31000"}
    env.pop("ZOO", None)
    out = subprocess.run(
        ["bash", str(CLUSTER / "launch_local.sh"), "3", "dcgan_mnist", "--logdir", "runs"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    configs = {}
    for line in out.splitlines():
        prefix, command = line.split("' ", 1)
        config = json.loads(prefix.removeprefix("TF_CONFIG='"))
        configs[config["task"]["index"]] = config
        assert command == "zoo train dcgan_mnist --logdir runs --strategy multi_worker"
    assert sorted(configs) == [0, 1, 2]
    hosts = [f"127.0.0.1:{31000 + i}" for i in range(3)]
    assert all(c["cluster"] == {"worker": hosts} for c in configs.values())
    usage = subprocess.run(["bash", str(CLUSTER / "launch_local.sh")], capture_output=True)
    assert usage.returncode == 2 and b"usage:" in usage.stderr


def test_kubernetes_job_gives_every_pod_its_task_in_one_cluster(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml", reason="pyyaml is in the dev extras")
    service, job = yaml.safe_load_all((CLUSTER / "k8s-job.yaml").read_text())
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    workers = int(env["WORKERS"])
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == workers
    assert service["spec"]["clusterIP"] == "None"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    # Run the pod's shell with a stand-in `zoo` that prints the TF_CONFIG it is given.
    (tmp_path / "zoo").write_text('#!/bin/sh\necho "$TF_CONFIG"\necho "$@" >&2\n')
    (tmp_path / "zoo").chmod(0o755)
    shell = shutil.which("sh")
    assert shell is not None
    for index in range(workers):
        result = subprocess.run(
            [shell, "-c", container["args"][0]],
            env={"PATH": f"{tmp_path}:/usr/bin:/bin", "JOB_COMPLETION_INDEX": str(index), **env},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        config = json.loads(result.stdout)
        name = job["metadata"]["name"]
        hosts = [f"{name}-{i}.{pod['subdomain']}:{env['PORT']}" for i in range(workers)]
        assert config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        assert "--strategy multi_worker" in result.stderr


# -- the loop in one process: the same steps and callbacks as fit ------------------------
class Recorder(keras.callbacks.Callback):
    """Records every callback call with its log keys; stops training at (epoch, batch)."""

    def __init__(self, stop_at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.events: list[tuple] = []
        self.epoch = 0

    def _record(self, name: str, index: int | None, logs: dict | None) -> None:
        self.events.append((name, index, tuple(sorted(logs or {}))))

    def on_train_begin(self, logs=None):
        self._record("train_begin", None, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._record("epoch_begin", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._record("train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._record("train_batch_end", batch, logs)
        if self.stop_at == (self.epoch, batch):
            self.model.stop_training = True

    def on_test_begin(self, logs=None):
        self._record("test_begin", None, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._record("test_batch_end", batch, logs)

    def on_test_end(self, logs=None):
        self._record("test_end", None, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._record("epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        self._record("train_end", None, logs)


def test_fit_distributed_matches_fit_on_two_replicas(digits: np.ndarray) -> None:
    """MirroredStrategy over the two logical CPUs: the loop and ``fit`` give the same
    weights, the same per-epoch logs (validation included) and the same callback calls,
    ``stop_training`` included."""
    import tensorflow as tf
    from zoo.recipes.distributed_loop import fit_distributed

    from zoo import registry
    from zoo.distribute import make_strategy

    strategy = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])  # one per process (cached)
    train = tf.data.Dataset.from_tensor_slices(digits).batch(8, drop_remainder=True).repeat()
    val = tf.data.Dataset.from_tensor_slices(digits[:16]).batch(8, drop_remainder=True)
    results = []
    for loop in (False, True):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = registry.load("dcgan_tiny", seed=1)
            model.compile(steps_per_execution=2)  # 2 calls of 2 steps per epoch
        recorder = Recorder(stop_at=(2, 1))
        kwargs = dict(epochs=4, steps_per_epoch=4, validation_data=val, callbacks=[recorder])
        if loop:
            history = fit_distributed(model, strategy, train, **kwargs)
        else:
            history = model.fit(train, verbose=0, shuffle=False, check_inputs=False, **kwargs)
        results.append((history.history, recorder.events, [w.numpy() for w in model.weights]))
    (fit_history, fit_events, fit_weights), (history, events, weights) = results
    assert events == fit_events
    assert [e[:2] for e in events if e[0] == "epoch_end"] == [("epoch_end", i) for i in range(3)]
    assert sorted(history) == sorted(fit_history)
    assert "val_g_loss" in history and len(history["g_loss"]) == 3  # stopped in epoch 3
    for key, values in fit_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(weights, fit_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_distributed_without_steps_per_epoch_passes_over_the_dataset_each_epoch(
    digits: np.ndarray,
) -> None:
    """Without ``steps_per_epoch`` every epoch is one whole pass, as in ``fit``."""
    import tensorflow as tf
    from zoo.recipes.distributed_loop import fit_distributed

    from zoo import registry
    from zoo.distribute import make_strategy

    strategy = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    train = tf.data.Dataset.from_tensor_slices(digits).batch(8, drop_remainder=True)
    results = []
    for loop in (False, True):
        keras.utils.set_random_seed(2)
        with strategy.scope():
            model = registry.load("dense_ae_tiny", seed=2)
            model.compile()
        recorder = Recorder()
        if loop:
            history = fit_distributed(model, strategy, train, epochs=2, callbacks=[recorder])
        else:
            history = model.fit(train, epochs=2, verbose=0, shuffle=False, callbacks=[recorder])
        results.append((history.history, recorder.events, [w.numpy() for w in model.weights]))
    (fit_history, fit_events, fit_weights), (history, events, weights) = results
    assert events == fit_events
    assert sum(e[0] == "train_batch_end" for e in events) == 2 * len(digits) // 8
    np.testing.assert_allclose(history["loss"], fit_history["loss"], rtol=1e-5)
    for a, b in zip(weights, fit_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        fit_distributed(model, strategy, train.repeat(), epochs=1)
