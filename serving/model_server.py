"""The models of a TF Serving ``models.config``, loaded per version, as TF Serving serves them.

:class:`ModelServer` loads every model version the config's version policies select
(``tf.saved_model.load``, serve tag, warmup records replayed before a version is
AVAILABLE; lifecycle in :mod:`zoo.serving.versions`), resolves version labels, and
answers the three REST APIs as JSON-ready dicts: model status
(``GetModelStatusResponse``), metadata (``GetModelMetadataResponse`` with the
``signature_def`` map) and predict (request format in :mod:`zoo.serving.rest_format`).
Lookups fail as TF Serving's do: unknown model or version 404 "Servable not found ...",
unknown label 400.

Like tensorflow_model_server's ``--file_system_poll_wait_seconds``, a background
thread re-reads every base path (default every second; 0 reads once at start): new
versions are loaded, and versions the policy drops are unloaded once a selected
version is AVAILABLE, so a new export replaces the old one with no failed request.
A configured model with no version folder yet waits: its status is 404 "Could not
find any versions of model ...", its requests 404 "Servable not found ...", until a
version appears. With ``batching`` (:class:`~zoo.serving.batching.BatchingOptions`),
concurrent predict calls are merged by :class:`~zoo.serving.batching.BatchScheduler`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .batching import BatchingOptions, BatchScheduler
from .config import (
    load_model_server_config,
    resolve_base_path,
    resolve_version_labels,
    select_versions,
    version_folders,
)
from .rest_format import check_predict_body, predict_response, run_directly
from .servable import (
    DEFAULT_MAX_BATCH_SIZE,
    RequestError,
    batch_size_of,
    check_arrays,
    check_batch_size,
    signature_of,
)
from .versions import ServableVersion, ServedModel

__all__ = ["DEFAULT_POLL_WAIT_SECONDS", "ModelServer", "ServableVersion", "ServedModel"]

log = logging.getLogger("zoo.serving")

#: tensorflow_model_server's default ``--file_system_poll_wait_seconds``.
DEFAULT_POLL_WAIT_SECONDS = 1.0


class ModelServer:
    """Every model of a TF Serving ``models.config``, loaded per version, answering REST calls.

    ``models_root`` is the local folder that stands for the container's ``/models``
    (default: ``<config dir>/models``). Methods return JSON-ready dicts or raise
    :class:`RequestError`; they are safe to call from many threads. Call :meth:`close`
    to stop polling and batching.
    """

    def __init__(
        self,
        config_path: str | Path,
        models_root: str | Path | None = None,
        *,
        allow_version_labels_for_unavailable_models: bool = False,
        file_system_poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
        batching: BatchingOptions | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.config = load_model_server_config(self.config_path)
        config_dir = self.config_path.resolve().parent
        self.models_root = Path(models_root) if models_root is not None else config_dir / "models"
        self.models: dict[str, ServedModel] = {}
        #: Notified on every version state change (see :meth:`wait_until`).
        self.changed = threading.Condition()
        self._poll_lock = threading.Lock()  # one poll at a time (thread or caller)
        for model_config in self.config.model_config_list.config:
            base = resolve_base_path(model_config.base_path, self.models_root, config_dir)
            folders = version_folders(base)
            chosen = select_versions(model_config, folders)
            if not chosen:
                found = (
                    f"found versions {sorted(folders)} but model_version_policy selects none"
                    if folders
                    else "found no integer-named version folder holding saved_model.pb"
                )
                problem = (
                    f"model '{model_config.name}': base_path {model_config.base_path!r} is "
                    f"{base}; {found} (expected e.g. {base / '1' / 'saved_model.pb'})"
                )
                labelled = model_config.version_labels and not (
                    allow_version_labels_for_unavailable_models
                )
                if folders or labelled:
                    # A policy that selects nothing is a config mistake; labels need
                    # loaded versions (TF Serving refuses them too).
                    extra = "; its version_labels need loaded versions" if labelled else ""
                    raise ValueError(problem + extra)
                # Nothing exported yet: serve the other models, answer 404 for this one.
                log.warning("%s: it is not available until a version is exported", problem)
            labels = resolve_version_labels(
                model_config,
                chosen,
                allow_unavailable=allow_version_labels_for_unavailable_models,
            )
            model = ServedModel(model_config, base, labels)
            model.poll(self.changed)
            self.models[model_config.name] = model
        self.batcher = BatchScheduler(batching) if batching is not None else None
        self.poll_wait_seconds = float(file_system_poll_wait_seconds)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        if self.poll_wait_seconds > 0:
            self._poller = threading.Thread(
                target=self._poll_forever, name="zoo-serving-poll", daemon=True
            )
            self._poller.start()

    # ---------------------------------------------------------------- lifecycle

    def poll(self) -> None:
        """Re-read every model's base path once and load/unload what its policy says."""
        with self._poll_lock:
            for model in self.models.values():
                model.poll(self.changed)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # a bad folder must not end polling
                log.exception("polling the model base paths failed")

    def wait_until(self, condition: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until ``condition()`` holds after some version state change (or at once);
        False when ``timeout`` seconds pass first."""
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def state(self, name: str, version: int) -> str | None:
        """The manager state of one version (``LOADING``, ``AVAILABLE``, ``END``...), if seen."""
        model = self.models.get(name)
        status = None if model is None else model.states.get(version)
        return None if status is None else status.state

    def close(self) -> None:
        """Stop polling and the batch threads (idempotent)."""
        self._stop.set()
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join()
        if self.batcher is not None:
            self.batcher.close()

    # ---------------------------------------------------------------- lookups

    def summary(self) -> str:
        """One line: each model with its versions, labels and signatures."""
        parts = []
        for model in self.models.values():
            if not model.versions:
                parts.append(f"{model.name} (no versions under {model.base_path}: not available)")
                continue
            versions = ",".join(str(v) for v in sorted(model.versions, reverse=True))
            sigs = ", ".join(sorted(model.latest.signatures))
            labels = "".join(f" {k}->{v}" for k, v in sorted(model.labels.items()))
            parts.append(f"{model.name} v{versions}{' labels' + labels if labels else ''} [{sigs}]")
        return "; ".join(parts)

    def _model(self, name: str, request: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise RequestError(
                404,
                f"Servable not found for request: {request}; this server serves models: "
                f"{', '.join(sorted(self.models))}",
            )
        return model

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServableVersion:
        """The servable a request names (latest when neither version nor label is given).

        Unknown model or version: 404; unknown label: 400 (TF Serving's
        INVALID_ARGUMENT "Unrecognized servable version label").
        """
        if label is not None:
            model = self._model(name, f"Latest({name})")
            version = self._label_version(model, label)
        else:
            request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            model = self._model(name, request)
        if version is None:
            return model.latest
        versions = model.versions  # one snapshot: the poller replaces the map
        if version not in versions:
            raise RequestError(
                404,
                f"Servable not found for request: Specific({name}, {version}); loaded "
                f"versions of '{name}': {', '.join(str(v) for v in sorted(versions)) or 'none'}",
            )
        return versions[version]

    @staticmethod
    def _label_version(model: ServedModel, label: str) -> int:
        if label not in model.labels:
            known = ", ".join(f"{k} -> {v}" for k, v in sorted(model.labels.items()))
            raise RequestError(
                400,
                f"Unrecognized servable version label: {label}; model '{model.name}' has "
                + (f"labels: {known}" if known else "no version labels"),
            )
        return model.labels[label]

    # ---------------------------------------------------------------- APIs

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """``GetModelStatusResponse`` JSON, as TF Serving's GetModelStatus answers: every
        version the manager has seen (LOADING, AVAILABLE, UNLOADING, END, failed loads with
        their error), highest first, or the one version named (a label names its version)."""
        model = self._model(name, f"Latest({name})")
        states = model.states
        if not states:
            raise RequestError(404, f"Could not find any versions of model {name}")
        if version is None and label is None:
            return model.status_json(sorted(states, reverse=True))
        if label is not None:
            version = self._label_version(model, label)
        if version not in states:
            raise RequestError(
                404,
                f"Servable not found for request: Specific({name}, {version}); versions of "
                f"'{name}' seen: {', '.join(str(v) for v in sorted(states))}",
            )
        return model.status_json([version])

    def metadata(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """``GetModelMetadataResponse`` JSON with the ``signature_def`` metadata."""
        servable = self.resolve(name, version, label)
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": servable.signature_defs}},
        }

    def predict(
        self,
        name: str,
        body: Any,
        version: int | None = None,
        label: str | None = None,
        *,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
    ) -> dict[str, Any]:
        """Run a REST predict request body (already JSON-decoded); return the response JSON."""
        body = check_predict_body(body)
        servable = self.resolve(name, version, label)
        return predict_response(body, servable, max_batch_size=max_batch_size, run=self.run)

    def predict_arrays(
        self,
        name: str,
        signature_name: str,
        arrays: Mapping[str, np.ndarray],
        version: int | None = None,
        label: str | None = None,
        *,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
    ) -> tuple[ServableVersion, str, dict[str, np.ndarray]]:
        """Run a signature on numpy inputs (the gRPC path): (servable, signature, outputs).

        An empty ``signature_name`` is ``serving_default``; inputs must match the
        signature's keys, dtypes and shapes exactly (400 otherwise)."""
        servable = self.resolve(name, version, label)
        sig = signature_of(servable, signature_name)
        specs = servable.inputs[sig]
        arrays = dict(arrays)
        check_arrays(arrays, specs, sig)
        check_batch_size(batch_size_of(arrays, specs), max_batch_size)
        return servable, sig, self.run(servable, sig, arrays)

    def run(
        self, servable: ServableVersion, sig: str, arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Call one signature on checked arrays (every transport's predict ends here): through
        the batch scheduler when batching is on, else at once."""
        if self.batcher is not None:
            return self.batcher.run(servable, sig, arrays)
        return run_directly(servable, sig, arrays)
