"""Load and fault benchmark of ``zoo serve`` (issue 15, section 4).

``dcgan_tiny`` and ``conv_ae_tiny`` (threshold 0.05) are exported with ``zoo export``
into a temporary models root, and ``zoo serve`` runs on it as a separate process
(``python -m zoo.cli serve``, loopback). This process is the client: an asyncio load
generator on aiohttp.

Load: DCGAN ``generate`` and the autoencoder's ``score``, at batch 1 and 16, with 8,
32 and 128 concurrent clients, on keep-alive connections and on a new connection per
request (``Connection: close``), ``--seconds`` each. Per cell: requests/s, p50 and p99
of the answered requests, errors (anything but 200, and failed connections) and 5xx.
Beside each, the same signature called in this process (``tf.saved_model.load``, the
same batch) and the REST overhead ``p50 REST - p50 in-process``; a one-client
keep-alive run per signature and batch measures that overhead without queueing.

Faults, each while 8 keep-alive clients call batch-1 ``generate``:

- a new DCGAN version exported (``zoo export``: written aside, renamed into the base
  path) mid-load, with the server polling the base path every second;
- clients disconnecting mid-request (half a body, a whole request then close before
  the answer, a reset);
- ``--slow-clients`` clients that send headers and trickle the body (the server
  should answer 408 after ``--rest_api_timeout_in_ms``);
- the bad-request corpus of ``tests/test_serving_fuzz.py``.

Server memory (RSS) is read at the start, after each phase and at the end. A server
flag the running ``zoo serve`` does not have is left out and the report says so.

    python -m bench.serving_load [--seconds 30] [--clients 8,32,128] [--batches 1,16]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import asyncio
import importlib.util
import json
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import numpy as np

from bench.common import write_report

ROOT = Path(__file__).resolve().parents[1]
FUZZ_TESTS = ROOT / "tests" / "test_serving_fuzz.py"

#: served name -> (registered model exported, extra ``zoo export`` flags, signature loaded)
MODELS = {
    "dcgan": ("dcgan_tiny", [], "generate"),
    "conv_ae": ("conv_ae_tiny", ["--threshold", "0.05"], "score"),
}
FAULT_MODEL = "dcgan"
FAULT_CLIENTS = 8
MAX_BATCH = 64
MAX_REQUEST_BYTES = 4 * 1024 * 1024
JSON = {"Content-Type": "application/json"}

# Targets of issue 15.
TARGET_OVERHEAD_MS = 2.0
TARGET_P99_S = 1.0
TARGET_MEMORY_RATIO = 1.10

CONFIG_ENTRY = """  config {{
    name: "{name}"
    base_path: "/models/{name}"
    model_platform: "tensorflow"
    model_version_policy {{ latest {{ num_versions: 1 }} }}
  }}
"""


# --------------------------------------------------------------------------- figures


@dataclass
class Tally:
    """What clients saw in one run: latencies of 200 answers, other statuses, failures."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    server_cores: float = float("nan")  # server CPU seconds per second of the run
    client_cores: float = float("nan")  # the same for this process, the load generator

    def answered(self, status: int, latency: float) -> None:
        self.statuses[status] += 1
        if status == 200:
            self.latencies.append(latency)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    @property
    def errors(self) -> int:
        """Requests without a 200: other statuses and failed connections."""
        return self.requests - self.statuses[200]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def what_failed(self) -> str:
        """E.g. ``503 x2, ClientOSError x1`` (empty when every request got 200)."""
        parts = [f"{s} x{n}" for s, n in sorted(self.statuses.items()) if s != 200]
        return ", ".join(parts + [f"{k} x{n}" for k, n in self.failures.most_common()])


@dataclass
class Cell:
    """One load cell: what ran and what the clients saw."""

    model: str
    signature: str
    batch: int
    clients: int
    keep_alive: bool
    tally: Tally
    in_process_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.tally.percentile_ms(50) - self.in_process_ms

    def misses(self) -> list[str]:
        """The targets this cell misses."""
        out = []
        if self.tally.errors or self.tally.server_errors:
            out.append(
                f"{self.tally.errors} errors ({self.tally.server_errors} 5xx: "
                f"{self.tally.what_failed()})"
            )
        if self.clients >= 128 and not self.tally.percentile_ms(99) < TARGET_P99_S * 1000:
            # Closed loop: each client waits for its answer, so by Little's law a request
            # spends clients / throughput in the server however fairly it is scheduled.
            out.append(
                f"p99 {self.tally.percentile_ms(99):.0f} ms >= {TARGET_P99_S * 1000:.0f} "
                f"(queueing: {self.clients} clients / {self.tally.rate:.0f} req/s = "
                f"{self.clients / self.tally.rate * 1000:.0f} ms each)"
            )
        return out


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def cells_table(cells: list[Cell]) -> str:
    """Markdown table of load cells."""
    rows = [
        "| model | signature | batch | clients | connections | requests/s | p50 ms | p99 ms "
        "| in-process p50 ms | p50 overhead ms | errors | 5xx | server / client CPU cores "
        "| target |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in cells:
        t = c.tally
        rows.append(
            f"| {c.model} | {c.signature} | {c.batch} | {c.clients} | "
            f"{'keep-alive' if c.keep_alive else 'new per request'} | {t.rate:.0f} | "
            f"{_ms(t.percentile_ms(50))} | {_ms(t.percentile_ms(99))} | {c.in_process_ms:.2f} | "
            f"{_ms(c.overhead_ms)} | {t.errors} | {t.server_errors} | "
            f"{t.server_cores:.2f} / {t.client_cores:.2f} | {'; '.join(c.misses()) or 'met'} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- clients


async def load(url: str, body: bytes, clients: int, keep_alive: bool, stop: asyncio.Event) -> Tally:
    """``clients`` concurrent clients POSTing ``body`` to ``url`` until ``stop`` is set."""
    tally = Tally()
    headers = JSON if keep_alive else {**JSON, "Connection": "close"}
    connector = aiohttp.TCPConnector(limit=clients, force_close=not keep_alive)
    timeout = aiohttp.ClientTimeout(total=120)

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                tally.answered(response.status, time.perf_counter() - start)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
                tally.failures[type(err).__name__] += 1

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    tally.seconds = time.perf_counter() - start
    return tally


async def timed_load(
    url: str, body: bytes, clients: int, keep_alive: bool, seconds: float
) -> Tally:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    return await load(url, body, clients, keep_alive, stop)


async def under_load(url: str, body: bytes, fault: Callable[[], Any]) -> tuple[Tally, Any]:
    """Run ``fault()`` (a coroutine function) while FAULT_CLIENTS keep-alive clients
    load ``url``; return their tally and the fault's result."""
    stop = asyncio.Event()
    task = asyncio.create_task(load(url, body, FAULT_CLIENTS, True, stop))
    await asyncio.sleep(0.5)
    try:
        result = await fault()
    finally:
        stop.set()
    return await task, result


def request_head(host: str, port: int, path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def _status(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 and line.startswith(b"HTTP/") else "closed"


async def disconnecting_clients(
    host: str,
    port: int,
    path: str,
    body: bytes,
    seconds: float,
    parallel: int = 8,
    pause: float = 0.05,
) -> Counter:
    """``parallel`` clients that each go away mid-request every ``pause`` seconds, round
    robin over three ways, for ``seconds``."""
    done: Counter = Counter()
    deadline = time.monotonic() + seconds
    head = request_head(host, port, path, len(body))

    async def one(kind: str) -> None:
        _reader, writer = await asyncio.open_connection(host, port)
        if kind == "half body, then close":
            writer.write(head + body[: len(body) // 2])
        else:
            writer.write(head + body)
        await writer.drain()
        if kind == "reset after the request":
            await asyncio.sleep(0.001)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
        done[kind] += 1

    async def loop(i: int) -> None:
        kinds = ["half body, then close", "whole request, close before the answer"]
        kinds.append("reset after the request")
        n = i
        while time.monotonic() < deadline:
            try:
                await one(kinds[n % len(kinds)])
            except OSError as err:
                done[f"could not connect or send: {type(err).__name__}"] += 1
            n += 1
            await asyncio.sleep(pause)

    await asyncio.gather(*(loop(i) for i in range(parallel)))
    return done


async def slow_clients(
    host: str, port: int, path: str, body: bytes, count: int, interval: float, wait: float
) -> Counter:
    """``count`` clients that send the headers, then one body byte per ``interval``
    seconds (never the last byte), for up to ``wait`` seconds: what each got."""
    outcomes: Counter = Counter()
    head = request_head(host, port, path, len(body))
    deadline = time.monotonic() + wait

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as err:
            outcomes[f"connect failed: {type(err).__name__}"] += 1
            return
        try:
            writer.write(head)
            await writer.drain()
            answer = asyncio.create_task(_status(reader))
            for byte in body[:-1]:
                left = deadline - time.monotonic()
                finished, _ = await asyncio.wait({answer}, timeout=min(interval, max(left, 0)))
                if finished or left <= 0:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
            left = max(deadline - time.monotonic(), 0.01)
            finished, _ = await asyncio.wait({answer}, timeout=left)
            if finished:
                outcomes[f"got {answer.result()}"] += 1
            else:
                answer.cancel()
                outcomes[f"no answer within {wait:.0f} s"] += 1
        except OSError as err:
            outcomes[f"connection error: {type(err).__name__}"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return outcomes


# --------------------------------------------------------------------------- server


def fuzz_module() -> ModuleType:
    """tests/test_serving_fuzz.py, which holds the bad-request corpus and its checks."""
    name = "test_serving_fuzz"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUZZ_TESTS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (psutil, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"cannot read the memory of process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def zoo(*args: str) -> list[str]:
    """A ``zoo`` command line run with this Python."""
    return [sys.executable, "-m", "zoo.cli", *args]


def export(root: Path, name: str) -> float:
    """``zoo export`` the model served as ``name`` into ``root``; returns seconds taken."""
    model, extra, _ = MODELS[name]
    start = time.perf_counter()
    subprocess.run(
        zoo("export", model, "--out", str(root), "--format", "savedmodel", "--name", name, *extra),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_flags(wanted: dict[str, str]) -> tuple[list[str], list[str]]:
    """The flags of ``wanted`` that ``zoo serve --help`` lists, and those it does not."""
    help_text = subprocess.run(
        zoo("serve", "--help"), capture_output=True, text=True, check=True
    ).stdout
    flags, missing = [], []
    for flag, value in wanted.items():
        if flag in help_text:
            flags += [flag, value]
        else:
            missing.append(f"{flag} {value}")
    return flags, missing


def wait_ready(url: str, names: list[str], process: subprocess.Popen, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"zoo serve exited: {log.read_text()[-2000:]}")
        try:
            for name in names:
                with urllib.request.urlopen(f"{url}/v1/models/{name}", timeout=5) as answer:
                    assert answer.status == 200
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"zoo serve did not answer within 180 s: {log.read_text()[-2000:]}")


def seconds_to_answer(url: str, name: str, limit: float) -> float | None:
    """Seconds until the server answers ``name``'s status (None: not within ``limit``)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            versions(url, name, timeout=limit - (time.monotonic() - start))
            return time.monotonic() - start
        except OSError:
            time.sleep(0.2)
    return None


def versions(url: str, name: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """(version, state) pairs of a model's status."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/models/{name}", timeout=timeout) as answer:
        return [(s["version"], s["state"]) for s in json.load(answer)["model_version_status"]]


# --------------------------------------------------------------------------- payloads


@dataclass
class Workload:
    """A served signature: its one input, a request body and an array per batch."""

    model: str
    signature: str
    input_name: str
    shape: tuple[int, ...]
    arrays: dict[int, np.ndarray] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/v1/models/{self.model}:predict"


def workload(root: Path, name: str, batches: list[int]) -> Workload:
    """The signature benchmarked for ``name``, read from its export metadata."""
    signature = MODELS[name][2]
    meta = json.loads((root / name / "1" / "assets.extra" / "zoo_export.json").read_text())
    ((input_name, spec),) = meta["signatures"][signature]["inputs"].items()
    work = Workload(name, signature, input_name, tuple(spec["shape"][1:]))
    rng = np.random.default_rng(0)
    for batch in batches:
        if signature == "generate":
            array = rng.standard_normal((batch, *work.shape)).astype(np.float32)
        else:
            array = rng.uniform(size=(batch, *work.shape)).astype(np.float32)
        work.arrays[batch] = array
        rows = np.round(array.astype(np.float64), 4).tolist()
        payload = {"signature_name": signature, "instances": rows}
        work.bodies[batch] = json.dumps(payload).encode()
    return work


def in_process_p50_ms(root: Path, work: Workload, batch: int, seconds: float) -> float:
    """p50 of the signature called on the loaded SavedModel, same batch, this process."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(root / work.model / "1")).signatures[work.signature]
    x = work.arrays[batch]
    for _ in range(5):
        fn(**{work.input_name: tf.constant(x)})
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        start = time.perf_counter()
        {k: v.numpy() for k, v in fn(**{work.input_name: tf.constant(x)}).items()}
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


# --------------------------------------------------------------------------- the run


async def faults(
    args: argparse.Namespace,
    url: str,
    root: Path,
    work: Workload,
    memory: Callable[[str], None],
) -> list[str]:
    """The four fault runs; returns report lines (markdown) and records memory."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    port_n = int(port)
    body = work.bodies[1]
    lines = ["## Faults", ""]
    misses: list[str] = []

    def normal(tally: Tally) -> str:
        return (
            f"{FAULT_CLIENTS} keep-alive clients, batch-1 `{work.signature}`: "
            f"{tally.requests} requests, {tally.errors} errors, {tally.server_errors} 5xx"
            + (f" ({tally.what_failed()})" if tally.errors else "")
            + f", p50 {_ms(tally.percentile_ms(50))} ms, p99 {_ms(tally.percentile_ms(99))} ms"
        )

    # 1. A new version exported mid-load.
    async def swap() -> dict[str, Any]:
        await asyncio.sleep(max(args.seconds / 3, 1.0))
        before = await asyncio.to_thread(versions, url, work.model)
        start = time.perf_counter()
        await asyncio.to_thread(export, root, work.model)
        exported = time.perf_counter()
        seen = None
        while time.perf_counter() - exported < args.swap_wait:
            now = await asyncio.to_thread(versions, url, work.model)
            if ("2", "AVAILABLE") in now:
                seen = time.perf_counter() - exported
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(args.seconds / 3, 1.0))
        return {
            "before": before,
            "after": await asyncio.to_thread(versions, url, work.model),
            "export_s": exported - start,
            "seen_s": seen,
        }

    tally, swap_result = await under_load(url + work.path, body, swap)
    memory("after the version swap")
    seen = swap_result["seen_s"]
    lines += [
        f"**New version mid-load.** `zoo export` wrote version 2 of `{work.model}` "
        f"({swap_result['export_s']:.1f} s) while {normal(tally)}. Status before "
        f"{swap_result['before']}, after {swap_result['after']}; version 2 "
        + (
            f"AVAILABLE {seen:.1f} s after the export finished."
            if seen is not None
            else f"not AVAILABLE within {args.swap_wait:.0f} s of the export (no polling?)."
        ),
        "",
    ]
    if tally.errors or seen is None:
        misses.append(
            f"version swap: {tally.errors} failed requests"
            + ("" if seen is not None else ", new version not picked up")
        )

    # 2. Clients disconnecting mid-request.
    async def disconnect() -> Counter:
        return await disconnecting_clients(host, port_n, work.path, body, args.seconds)

    tally, gone = await under_load(url + work.path, body, disconnect)
    memory("after the disconnecting clients")
    recovered = await asyncio.to_thread(seconds_to_answer, url, work.model, 60.0)
    lines += [
        f"**Clients disconnecting mid-request**: 8 clients, each going away every 50 ms "
        f"for {args.seconds:.0f} s with a batch-1 request "
        f"({', '.join(f'{k}: {n}' for k, n in gone.items())}), while {normal(tally)}. "
        + (
            f"Afterwards the server answered a status request in {recovered:.2f} s."
            if recovered is not None
            else "Afterwards the server did not answer a status request within 60 s."
        ),
        "",
    ]
    if tally.errors or recovered is None:
        misses.append(
            f"disconnecting clients: {tally.errors} failed requests of normal clients"
            + ("" if recovered is not None else ", server unresponsive for 60 s after")
        )

    # 3. Slow clients.
    wait = max(args.seconds, args.rest_timeout_ms / 1000 * 1.5 + 5)

    async def slow() -> Counter:
        return await slow_clients(host, port_n, work.path, body, args.slow_clients, 0.5, wait)

    tally, outcomes = await under_load(url + work.path, body, slow)
    memory("after the slow clients")
    lines += [
        f"**{args.slow_clients} slow clients** (headers, then one body byte per 0.5 s, "
        f"for up to {wait:.0f} s; the server was asked for 408 after "
        f"{args.rest_timeout_ms} ms): {', '.join(f'{k}: {n}' for k, n in outcomes.items())}; "
        f"meanwhile {normal(tally)}.",
        "",
    ]
    if tally.errors or set(outcomes) != {"got 408"}:
        misses.append(
            f"slow clients: {dict(outcomes)}; normal clients {tally.errors} errors, "
            f"p99 {_ms(tally.percentile_ms(99))} ms"
        )

    # 4. The bad-request corpus.
    fuzz = fuzz_module()
    corpus = fuzz.bad_requests(
        work.model,
        work.input_name,
        work.shape[0],
        max_request_bytes=MAX_REQUEST_BYTES,
        max_batch_size=MAX_BATCH,
    )

    def send_corpus() -> list[str]:
        wrong = []
        for case in corpus:
            answer = fuzz.exchange((host, port_n), case.data)
            problem = fuzz.problem(answer, head=case.data.startswith(b"HEAD "))
            problem = problem or fuzz.good_answer((host, port_n), work.model, work.shape[0])
            if problem:
                wrong.append(f"`{case.id}`: {problem}")
        return wrong

    async def bad() -> list[str]:
        return await asyncio.to_thread(send_corpus)

    tally, wrong = await under_load(url + work.path, body, bad)
    memory("after the bad-request corpus")
    lines += [
        f"**Bad-request corpus** ({len(corpus)} requests of tests/test_serving_fuzz.py, each "
        f"followed by a good one): {len(corpus) - len(wrong)} answered with a JSON 4xx "
        f"and the server alive, {len(wrong)} not; meanwhile {normal(tally)}.",
        "",
    ]
    lines += [f"- {w}" for w in wrong[:40]]
    if len(wrong) > 40:
        lines.append(f"- ... and {len(wrong) - 40} more")
    lines.append("")
    if wrong or tally.errors:
        misses.append(f"bad-request corpus: {len(wrong)} wrong answers")
    return [*lines, "Fault targets missed: " + ("; ".join(misses) or "none") + ".", ""]


async def run(args: argparse.Namespace, root: Path, log: Path) -> str:
    """Export, serve, load, break; returns the report body."""
    export_s = {name: export(root, name) for name in MODELS}
    config = root / "models.config"
    entries = "".join(CONFIG_ENTRY.format(name=name) for name in MODELS)
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    works = {name: workload(root, name, args.batches) for name in MODELS}

    in_process = {
        (name, batch): in_process_p50_ms(root, work, batch, min(args.seconds, 5))
        for name, work in works.items()
        for batch in args.batches
    }

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags, missing = server_flags(
        {
            "--file_system_poll_wait_seconds": "1",
            "--rest_api_timeout_in_ms": str(args.rest_timeout_ms),
            "--max_batch_size": str(MAX_BATCH),
            "--max_request_bytes": str(MAX_REQUEST_BYTES),
        }
    )
    command = zoo("serve", "--model_config_file", str(config), "--models_root", str(root))
    command += ["--rest_api_port", str(port), *flags]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    memory: list[tuple[str, float]] = []
    try:
        wait_ready(url, list(MODELS), process, log)
        memory.append(("start (models loaded, no request yet)", rss_mb(process.pid)))

        def note_memory(when: str) -> None:
            memory.append((when, rss_mb(process.pid)))

        cells: list[Cell] = []
        for name, work in works.items():
            for batch in args.batches:
                for clients in [1, *args.clients]:
                    for keep_alive in (True, False) if clients > 1 else (True,):
                        server_cpu, client_cpu = cpu_seconds(process.pid), time.process_time()
                        tally = await timed_load(
                            url + work.path, work.bodies[batch], clients, keep_alive, args.seconds
                        )
                        tally.server_cores = (cpu_seconds(process.pid) - server_cpu) / tally.seconds
                        tally.client_cores = (time.process_time() - client_cpu) / tally.seconds
                        cell = Cell(
                            name, work.signature, batch, clients, keep_alive, tally,
                            in_process[(name, batch)],
                        )  # fmt: skip
                        cells.append(cell)
                        print(cells_table([cell]).splitlines()[-1], flush=True)
        note_memory("after the load cells")
        fault_lines = await faults(args, url, root, works[FAULT_MODEL], note_memory)
        await asyncio.sleep(2)
        note_memory("end (2 s idle after the last request)")
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return report_body(args, command, missing, export_s, cells, fault_lines, memory)


def report_body(
    args: argparse.Namespace,
    command: list[str],
    missing: list[str],
    export_s: dict[str, float],
    cells: list[Cell],
    fault_lines: list[str],
    memory: list[tuple[str, float]],
) -> str:
    """The report's markdown (without the title and command lines)."""
    single = [c for c in cells if c.clients == 1]
    overhead = [c for c in single if c.signature == "generate" and c.batch == 1]
    start_mb, end_mb = memory[0][1], memory[-1][1]
    ratio = end_mb / start_mb
    load_misses = [f"{c.model} b{c.batch} x{c.clients}: {'; '.join(c.misses())}" for c in cells]
    load_misses = [m for c, m in zip(cells, load_misses, strict=True) if c.misses()]
    served = " ".join(re.sub(r"^/.*/serving_load_[^/]+", "<tmp>", p) for p in command[1:])
    lines = [
        f"Server: `python {served}` (ports on 127.0.0.1; the load generator is this process, "
        f"on the same {os.cpu_count()} cores). Models exported with `zoo export` "
        + ", ".join(f"{MODELS[n][0]} as {n} ({s:.0f} s)" for n, s in export_s.items())
        + f". {args.seconds:g} s per cell.",
        "",
    ]
    if missing:
        lines += [
            "Flags this `zoo serve` does not have (left out): "
            + ", ".join(f"`{m}`" for m in missing)
            + ".",
            "",
        ]
    lines += [
        "## Targets",
        "",
        "| target | figure | met |",
        "|---|---|---|",
        f"| 0 errors and 0 5xx in every load cell | "
        f"{sum(c.tally.errors for c in cells)} errors, "
        f"{sum(c.tally.server_errors for c in cells)} 5xx over {len(cells)} cells | "
        f"{'yes' if not any(c.tally.errors or c.tally.server_errors for c in cells) else 'no'} |",
    ]
    for c in overhead:
        met = c.overhead_ms <= TARGET_OVERHEAD_MS
        lines.append(
            f"| keep-alive batch-1 generate p50 within {TARGET_OVERHEAD_MS:g} ms of in-process "
            f"| {_ms(c.tally.percentile_ms(50))} ms vs {c.in_process_ms:.2f} ms (1 client): "
            f"+{_ms(c.overhead_ms)} ms | {'yes' if met else 'no'} |"
        )
    at_128 = [c for c in cells if c.clients >= 128]
    if at_128:
        worst = max(c.tally.percentile_ms(99) for c in at_128)
        lines.append(
            f"| p99 < {TARGET_P99_S:g} s at 128 clients | worst {_ms(worst)} ms | "
            f"{'yes' if worst < TARGET_P99_S * 1000 else 'no'} |"
        )
    lines += [
        f"| memory back within {TARGET_MEMORY_RATIO - 1:.0%} of start | {start_mb:.0f} MB at "
        f"start, {end_mb:.0f} MB at the end ({ratio - 1:+.1%}) | "
        f"{'yes' if ratio <= TARGET_MEMORY_RATIO else 'no'} |",
        "",
    ]
    if load_misses:
        lines += ["Load cells missing a target:", ""] + [f"- {m}" for m in load_misses] + [""]
    lines += [
        "## Load",
        "",
        "p50/p99 are over answered (200) requests; errors count every request without a "
        "200 (other statuses and failed connections). The in-process p50 is the SavedModel "
        "signature called in this process with the same batch, server idle; at more than "
        "one client the REST p50 includes queueing behind the other clients.",
        "",
        cells_table(cells),
        "",
        *fault_lines,
        "## Server memory (RSS)",
        "",
        "| when | MB |",
        "|---|---:|",
        *(f"| {when} | {mb:.0f} |" for when, mb in memory),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="per load cell and fault")
    parser.add_argument("--clients", default="8,32,128", help="concurrent clients per cell")
    parser.add_argument("--batches", default="1,16", help="instances per request")
    parser.add_argument("--slow-clients", type=int, default=400, help="clients trickling bodies")
    parser.add_argument(
        "--rest-timeout-ms",
        type=int,
        default=5000,
        help="zoo serve --rest_api_timeout_in_ms: a stalled body gets 408 after this",
    )
    parser.add_argument(
        "--swap-wait", type=float, default=20, help="seconds to wait for the new version"
    )
    args = parser.parse_args(argv)
    args.clients = [int(v) for v in args.clients.split(",")]
    args.batches = [int(v) for v in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="serving_load_") as tmp:
        root, log = Path(tmp) / "models", Path(tmp) / "server.log"
        body = asyncio.run(run(args, root, log))
    command = "python -m bench.serving_load" + (f" {' '.join(argv)}" if argv else "")
    path = write_report("serving_load", "Serving under load and faults", body, command)
    print(body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
