"""The models of a TF Serving ``models.config``, loaded per version, as TF Serving serves them.

:class:`ModelServer` loads every model version the config's version policies select
(``tf.saved_model.load``, serve tag), resolves version labels, and answers the three
REST APIs as JSON-ready dicts: model status (``GetModelStatusResponse``), metadata
(``GetModelMetadataResponse`` with the ``signature_def`` map) and predict (request
format in :mod:`zoo.serving.rest_format`). Lookups fail as TF Serving's do: unknown
model or version 404 "Servable not found ...", unknown label 400.

A configured model with no version folder yet (nothing exported) is kept as waiting:
its status is 404 "Could not find any versions of model ..." and its requests 404
"Servable not found ...". Versions are read at construction only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import (
    ModelConfig,
    load_model_server_config,
    resolve_base_path,
    resolve_version_labels,
    select_versions,
    version_folders,
)
from .rest_format import check_predict_body, predict_response, run_directly
from .servable import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_SIGNATURE,
    InputSpec,
    RequestError,
    batch_size_of,
    check_arrays,
    check_batch_size,
)

__all__ = ["ModelServer", "ServableVersion", "ServedModel"]

log = logging.getLogger("zoo.serving")


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


@dataclass
class ServedModel:
    """A model of the config with its loaded versions and version labels."""

    config: ModelConfig
    base_path: Path
    versions: dict[int, ServableVersion]
    labels: dict[str, int]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def latest(self) -> ServableVersion:
        if not self.versions:
            raise RequestError(
                404,
                f"Servable not found for request: Latest({self.name}); no version of "
                f"'{self.name}' is loaded (nothing under {self.base_path} when the server "
                "started: export a version, then restart the server)",
            )
        return self.versions[max(self.versions)]


def _read_signature_defs(version_dir: Path) -> dict[str, Any]:
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


def _load_version(name: str, version: int, path: Path) -> ServableVersion:
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
        signature_defs=_read_signature_defs(path),
        inputs=inputs,
    )


class ModelServer:
    """Every model of a TF Serving ``models.config``, loaded per version, answering REST calls.

    ``models_root`` is the local folder that stands for the container's ``/models``
    (default: ``<config dir>/models``). Methods return JSON-ready dicts or raise
    :class:`RequestError`; they are safe to call from many threads.
    """

    def __init__(
        self,
        config_path: str | Path,
        models_root: str | Path | None = None,
        *,
        allow_version_labels_for_unavailable_models: bool = False,
    ) -> None:
        self.config_path = Path(config_path)
        self.config = load_model_server_config(self.config_path)
        config_dir = self.config_path.resolve().parent
        self.models_root = Path(models_root) if models_root is not None else config_dir / "models"
        self.models: dict[str, ServedModel] = {}
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
            versions = {v: _load_version(model_config.name, v, folders[v]) for v in chosen}
            labels = resolve_version_labels(
                model_config,
                chosen,
                allow_unavailable=allow_version_labels_for_unavailable_models,
            )
            self.models[model_config.name] = ServedModel(model_config, base, versions, labels)

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
            if label not in model.labels:
                known = ", ".join(f"{k} -> {v}" for k, v in sorted(model.labels.items()))
                raise RequestError(
                    400,
                    f"Unrecognized servable version label: {label}; model '{name}' has "
                    + (f"labels: {known}" if known else "no version labels"),
                )
            version = model.labels[label]
        else:
            request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            model = self._model(name, request)
        if version is None:
            return model.latest
        if version not in model.versions:
            raise RequestError(
                404,
                f"Servable not found for request: Specific({name}, {version}); loaded versions "
                f"of '{name}': {', '.join(str(v) for v in sorted(model.versions))}",
            )
        return model.versions[version]

    # ---------------------------------------------------------------- APIs

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """``GetModelStatusResponse`` JSON: every loaded version, or the one named."""
        model = self._model(name, f"Latest({name})")
        if not model.versions:
            raise RequestError(404, f"Could not find any versions of model {name}")
        if version is None and label is None:
            versions = sorted(model.versions, reverse=True)
        else:
            versions = [self.resolve(name, version, label).version]
        return {
            "model_version_status": [
                {
                    "version": str(v),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
                for v in versions
            ]
        }

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
        sig = signature_name or DEFAULT_SIGNATURE
        if sig not in servable.signatures:
            available = ", ".join(sorted(servable.signatures))
            raise RequestError(
                400,
                f'Serving signature name: "{sig}" not found in signature def; model '
                f"'{name}' version {servable.version} has signatures: {available}",
            )
        specs = servable.inputs[sig]
        arrays = dict(arrays)
        check_arrays(arrays, specs, sig)
        check_batch_size(batch_size_of(arrays, specs), max_batch_size)
        return servable, sig, self.run(servable, sig, arrays)

    def run(
        self, servable: ServableVersion, sig: str, arrays: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Call one signature on checked arrays (every transport's predict ends here)."""
        return run_directly(servable, sig, arrays)
