"""Version lifecycle of one served model, as TF Serving's manager runs it.

Each version a model's base path holds goes ``LOADING`` (``tf.saved_model.load``, then
the warmup records of ``assets.extra/tf_serving_warmup_requests`` are replayed) ->
``AVAILABLE`` (requests reach it only now) -> ``UNLOADING`` -> ``END``. A load or
warmup that fails ends in ``END`` with the error in its status; the version is never
served and is not retried while its folder stays. What the model's status lists
follows TF Serving's ``ServableStateMonitor``: every version the manager has seen,
unloaded and failed ones included, highest first.

Followed TF Serving files (tensorflow/serving):

- ``core/availability_preserving_policy.cc``: :func:`next_action` (unload a version
  the policy no longer selects only once a selected version is available; load the
  highest new version first);
- ``sources/storage_path/file_system_storage_path_source.cc``: :meth:`ServedModel.poll`
  re-reads the base path and applies the version policy (``config.select_versions``);
- ``servables/tensorflow/saved_model_warmup_util.cc``: :func:`warm_up` (at most 1000
  records, a failing record fails the load);
- ``model_servers/get_model_status_impl.cc``: :meth:`ServedModel.status_json`.

An unloaded version is only dropped from the serving map: a request that already
holds it finishes on it (Python keeps the loaded SavedModel alive while referenced).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig, select_versions, version_folders
from .servable import (
    DEFAULT_SIGNATURE,
    InputSpec,
    RequestError,
    call_signature,
    check_arrays,
)

__all__ = [
    "AVAILABLE",
    "END",
    "LOADING",
    "UNLOADING",
    "LoadError",
    "ServableVersion",
    "ServedModel",
    "VersionStatus",
    "load_version",
    "next_action",
    "warm_up",
]

log = logging.getLogger("zoo.serving")

# ModelVersionStatus.State names (tensorflow_serving/apis/get_model_status.proto).
LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"


class LoadError(Exception):
    """A version that cannot be served: a ``google.rpc`` code name and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ServableVersion:
    """One loaded version of a model: its SavedModel, signatures and metadata."""

    name: str
    version: int
    path: Path
    loaded: Any  # the object tf.saved_model.load returned; keeps variables alive
    signatures: dict[str, Any]
    signature_defs: dict[str, Any]  # JSON form of the SignatureDefMap, as TF Serving prints it
    inputs: dict[str, dict[str, InputSpec]] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionStatus:
    """A version's manager state and the error that ended it (``OK`` when none)."""

    state: str
    error_code: str = "OK"
    error_message: str = ""

    def json(self, version: int) -> dict[str, Any]:
        """One ``ModelVersionStatus`` as TF Serving's REST API prints it."""
        return {
            "version": str(version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


def read_signature_defs(version_dir: Path) -> dict[str, Any]:
    """The serve-tagged MetaGraph's signature defs, as TF Serving's metadata JSON prints them."""
    from google.protobuf import json_format, text_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb = version_dir / "saved_model.pb"
    if pb.is_file():
        saved_model.ParseFromString(pb.read_bytes())
    else:
        text_format.Parse((version_dir / "saved_model.pbtxt").read_text(), saved_model)
    graphs = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ValueError(f"{version_dir}: the SavedModel has no MetaGraph tagged 'serve'")
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in graphs[0].signature_def.items():
        sig_map.signature_def[key].CopyFrom(sig)
    return json_format.MessageToDict(
        sig_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )["signature_def"]


def load_version(name: str, version: int, path: Path) -> ServableVersion:
    """Load one version folder (serve tag) with its signatures' input specs."""
    import tensorflow as tf  # imported on first use: `zoo serve --help` stays fast

    loaded = tf.saved_model.load(str(path), tags=["serve"])
    signatures = dict(loaded.signatures)
    inputs: dict[str, dict[str, InputSpec]] = {}
    for sig_name, fn in signatures.items():
        specs = fn.structured_input_signature[1]
        inputs[sig_name] = {
            key: InputSpec(
                key,
                spec.dtype,
                None if spec.shape.rank is None else tuple(spec.shape.as_list()),
            )
            for key, spec in sorted(specs.items())
        }
    return ServableVersion(
        name=name,
        version=version,
        path=path,
        loaded=loaded,
        signatures=signatures,
        signature_defs=read_signature_defs(path),
        inputs=inputs,
    )


def warm_up(servable: ServableVersion) -> int:
    """Replay ``<version>/assets.extra/tf_serving_warmup_requests`` through the version's
    signatures (TF Serving's SavedModel warmup); return the number of records.

    No file is fine (0). Raises :class:`LoadError` naming the record when one fails."""
    from zoo.export import warmup  # imports TensorFlow (already loaded by now)

    path = servable.path / "assets.extra" / warmup.WARMUP_FILE
    if not path.is_file():
        return 0
    try:
        records = warmup.read_warmup_requests(path)
    except Exception as err:  # a corrupt file fails the load, whatever broke
        raise LoadError("DATA_LOSS", f"Failed to read warmup records from {path}: {err}") from None
    if len(records) > warmup.MAX_RECORDS:
        raise LoadError(
            "INVALID_ARGUMENT",
            f"Number of warmup records exceeds the maximum ({warmup.MAX_RECORDS}) at {path}",
        )
    for i, (_, sig_name, arrays) in enumerate(records):
        sig = sig_name or DEFAULT_SIGNATURE
        try:
            if sig not in servable.signatures:
                raise RequestError(400, f'Serving signature name: "{sig}" not found')
            check_arrays(arrays, servable.inputs[sig], sig)
            call_signature(servable.signatures[sig], arrays, servable.inputs[sig], sig)
        except RequestError as err:
            raise LoadError(
                "INVALID_ARGUMENT", f"warmup record {i} of {path} failed: {err.message}"
            ) from None
    return len(records)


def next_action(states: dict[int, VersionStatus], aspired: set[int]) -> tuple[str, int] | None:
    """The manager's next step, as TF Serving's AvailabilityPreservingPolicy chooses it:
    ``("unload", v)``, ``("load", v)`` or None when nothing is left to do.

    A version the policy no longer selects is unloaded (lowest first) only when no
    version is selected, when a selected version is AVAILABLE, or when more than one
    unselected version is AVAILABLE; then the highest new selected version is loaded.
    A version whose load failed is not new (it is not retried)."""
    serving_unaspired = [v for v, s in states.items() if s.state == AVAILABLE and v not in aspired]
    aspired_serving = any(states[v].state == AVAILABLE for v in aspired if v in states)
    if serving_unaspired and (not aspired or aspired_serving or len(serving_unaspired) > 1):
        return "unload", min(serving_unaspired)
    new = [
        v
        for v in aspired
        if v not in states or (states[v].state == END and states[v].error_code == "OK")
    ]
    return ("load", max(new)) if new else None


@dataclass
class ServedModel:
    """A model of the config: its versions' states, the AVAILABLE versions, and labels.

    ``versions`` and ``states`` are replaced, never changed in place, so readers on
    other threads always see a consistent map without taking the lock."""

    config: ModelConfig
    base_path: Path
    labels: dict[str, int]
    versions: dict[int, ServableVersion] = field(default_factory=dict)
    states: dict[int, VersionStatus] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def latest(self) -> ServableVersion:
        versions = self.versions
        if not versions:
            raise RequestError(
                404,
                f"Servable not found for request: Latest({self.name}); no version of "
                f"'{self.name}' is available (none under {self.base_path} yet, or still "
                "loading: export a version; the server picks it up when it polls)",
            )
        return versions[max(versions)]

    def status_json(self, versions: list[int]) -> dict[str, Any]:
        """``GetModelStatusResponse`` JSON for ``versions`` (each must have a state)."""
        states = self.states
        return {"model_version_status": [states[v].json(v) for v in versions]}

    def _set(self, version: int, status: VersionStatus, changed: threading.Condition) -> None:
        with changed:
            self.states = {**self.states, version: status}
            changed.notify_all()

    def poll(self, changed: threading.Condition) -> None:
        """Read the base path once, apply the version policy, load and unload until the
        manager has nothing left to do (each step notifies ``changed``)."""
        folders = version_folders(self.base_path)
        aspired = set(select_versions(self.config, folders))
        while (action := next_action(self.states, aspired)) is not None:
            kind, version = action
            if kind == "unload":
                self._set(version, VersionStatus(UNLOADING), changed)
                with changed:
                    self.versions = {v: s for v, s in self.versions.items() if v != version}
                log.info("%s: version %d unloaded", self.name, version)
                self._set(version, VersionStatus(END), changed)
            else:
                self._load(version, folders[version], changed)

    def _load(self, version: int, path: Path, changed: threading.Condition) -> None:
        self._set(version, VersionStatus(LOADING), changed)
        try:
            servable = load_version(self.name, version, path)
            records = warm_up(servable)
        except Exception as err:  # any load failure ends the version, not the server
            code = err.code if isinstance(err, LoadError) else "UNKNOWN"
            message = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log.warning("%s: version %d failed to load: %s", self.name, version, message)
            self._set(version, VersionStatus(END, code, message), changed)
            return
        with changed:
            self.versions = {**self.versions, version: servable}
            self.states = {**self.states, version: VersionStatus(AVAILABLE)}
            changed.notify_all()
        log.info("%s: version %d AVAILABLE (%d warmup records)", self.name, version, records)
