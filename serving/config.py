"""Read and check TF Serving's configuration files, and apply its version rules.

- ``models.config`` is a text-format ``tensorflow.serving.ModelServerConfig``; the
  ``tensorflow-serving-api`` wheel ships its proto, so it is parsed with the real
  message (typos are rejected exactly as tensorflow_model_server rejects them).
- The batching parameters file (``BatchingParameters``) and the monitoring config
  (``MonitoringConfig``) have no protos in the wheel. They are parsed here with the
  same protobuf text-format parser, against messages rebuilt in a private descriptor
  pool from TF Serving's documented field names and types (a strict whitelist):
  unknown fields and wrong value types fail with the file, line and column.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

#: The folder TF Serving's container convention puts models under (``/models/<name>``).
CONTAINER_MODELS_PREFIX = "/models"

#: File names tensorflow_model_server accepts as a SavedModel's graph.
SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")

__all__ = [
    "CONTAINER_MODELS_PREFIX",
    "ModelConfig",
    "ModelServerConfig",
    "available_versions",
    "load_model_server_config",
    "resolve_base_path",
    "resolve_version_labels",
    "select_versions",
    "validate_batching_parameters",
    "validate_model_server_config",
    "validate_monitoring_config",
    "version_folders",
]


# --------------------------------------------------------------------------- parsing helpers

_LOCATION = re.compile(r"^(\d+):(\d+) : ")
_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


def _parse_text(text: str, msg: message.Message, path: Path, pool: Any = None) -> None:
    """Parse text format into ``msg``; a ParseError becomes a ValueError naming the line."""
    try:
        text_format.Parse(text, msg, descriptor_pool=pool)
    except text_format.ParseError as err:
        raw = str(err)
        where = ""
        match = _LOCATION.match(raw)
        if match:
            where = f" line {match.group(1)}, column {match.group(2)}"
            raw = raw[match.end() :]
        raise ValueError(f"{path}:{where}: {raw}{_suggest(raw, pool)}") from None


def _suggest(problem: str, pool: Any) -> str:
    """A "did you mean" hint for an unknown field, from the message's real field names."""
    if 'Expected "{"' in problem and pool is not None:
        return " (wrapper fields are written as 'name { value: N }')"
    match = _NO_FIELD.search(problem)
    if not match:
        return ""
    pools = [pool] if pool is not None else []
    pools.append(descriptor_pool.Default())
    for candidate in pools:
        try:
            desc = candidate.FindMessageTypeByName(match.group(1))
        except KeyError:
            continue
        names = [f.name for f in desc.fields]
        close = difflib.get_close_matches(match.group(2), names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"{hint} Known fields: {', '.join(names)}."
    return ""


def _read(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    try:
        return path, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None


# --------------------------------------------------------------------------- models.config


def load_model_server_config(path: str | Path) -> ModelServerConfig:
    """Parse a text-format ``ModelServerConfig`` (TF Serving's ``--model_config_file``).

    Raises ``ValueError`` naming the file, line and problem on a parse error, and on
    the checks of :func:`validate_model_server_config`.
    """
    path, text = _read(path)
    config = ModelServerConfig()
    _parse_text(text, config, path)
    validate_model_server_config(config, source=str(path))
    return config


def validate_model_server_config(config: ModelServerConfig, *, source: str = "config") -> None:
    """Checks tensorflow_model_server makes before loading anything."""
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(
            f"{source}: expected a 'model_config_list {{ config {{ ... }} }}' block "
            "(custom_model_config is not supported here)"
        )
    models = config.model_config_list.config
    if not models:
        raise ValueError(f"{source}: model_config_list has no 'config' entries")
    seen: set[str] = set()
    for i, model in enumerate(models):
        label = f"{source}: model_config_list.config[{i}]"
        if not model.name:
            raise ValueError(f"{label}: 'name' is required")
        if model.name in seen:
            raise ValueError(f"{label}: duplicate model name '{model.name}'")
        seen.add(model.name)
        if not model.base_path:
            raise ValueError(f"{label} ('{model.name}'): 'base_path' is required")
        platform = model.model_platform
        if not platform and model.model_type == model_server_config_pb2.TENSORFLOW:
            platform = "tensorflow"
        if platform != "tensorflow":
            raise ValueError(
                f"{label} ('{model.name}'): model_platform must be \"tensorflow\"; got {platform!r}"
            )
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ValueError(
                f"{label} ('{model.name}'): model_version_policy.specific lists no versions"
            )


def resolve_base_path(
    base_path: str, models_root: str | Path, config_dir: str | Path | None = None
) -> Path:
    """Map a config ``base_path`` to a local folder.

    ``/models`` and ``/models/<...>`` (TF Serving's container convention) map to
    ``models_root`` (the folder the container mounts at /models); other absolute
    paths are kept; relative paths are resolved against ``config_dir`` (the config
    file's folder), or the current folder when it is not given.
    """
    if "://" in base_path:
        raise ValueError(
            f"base_path {base_path!r}: remote file systems are not supported by the local "
            "server (tensorflow_model_server reads them; the local server reads folders)"
        )
    prefix = CONTAINER_MODELS_PREFIX
    if base_path == prefix or base_path.startswith(prefix + "/"):
        rest = base_path[len(prefix) :].strip("/")
        return Path(models_root) / rest if rest else Path(models_root)
    path = Path(base_path)
    if path.is_absolute():
        return path
    return (Path(config_dir) if config_dir is not None else Path.cwd()) / path


def version_folders(base_path: str | Path) -> dict[int, Path]:
    """``{version: folder}`` for the integer-named subfolders of ``base_path`` holding a SavedModel.

    Folders that are not plain non-negative integers (``.tmp-3``, ``3.partial``,
    ``latest``) and integer folders without ``saved_model.pb`` (a half-written
    export) are ignored. A missing ``base_path`` gives an empty dict. When two names
    parse to one number (``1`` and ``001``), the first in sorted order wins.
    """
    base = Path(base_path)
    if not base.is_dir():
        return {}
    found: dict[int, Path] = {}
    for child in sorted(base.iterdir()):
        if not child.is_dir() or not child.name.isascii() or not child.name.isdigit():
            continue
        if any((child / name).is_file() for name in SAVED_MODEL_FILENAMES):
            found.setdefault(int(child.name), child)
    return dict(sorted(found.items()))


def available_versions(base_path: str | Path) -> list[int]:
    """Integer versions under ``base_path`` that hold a SavedModel, ascending.

    See :func:`version_folders` for what is ignored.
    """
    return list(version_folders(base_path))


def select_versions(model: ModelConfig, available: Iterable[int]) -> list[int]:
    """The versions TF Serving would serve under ``model.model_version_policy``, ascending.

    ``latest { num_versions: N }`` keeps the N largest (N defaults to 1, and no policy
    means latest 1); ``all {}`` keeps every version; ``specific { versions: ... }``
    keeps the listed versions that exist.
    """
    versions = sorted(set(available))
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return versions
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in versions if v in wanted]
    num = policy.latest.num_versions if choice == "latest" else 1
    num = max(int(num), 1)
    return versions[-num:]


def resolve_version_labels(
    model: ModelConfig,
    loaded_versions: Sequence[int],
    *,
    allow_unavailable: bool = False,
) -> dict[str, int]:
    """``version_labels`` of ``model`` as ``{label: version}``.

    Like tensorflow_model_server, a label must point at a loaded version unless
    ``allow_unavailable`` (its ``--allow_version_labels_for_unavailable_models``).
    """
    labels = dict(model.version_labels)
    loaded = set(loaded_versions)
    for label, version in labels.items():
        if version not in loaded and not allow_unavailable:
            raise ValueError(
                f"model '{model.name}': version label '{label}' points at version {version}, "
                f"which is not loaded (loaded: {sorted(loaded) or 'none'}). TF Serving "
                "refuses to start in this case: point the label at a loaded version, or "
                "pass --allow_version_labels_for_unavailable_models"
            )
    return labels


# --------------------------------------------------------------------------- batching & monitoring

# Field name -> kind, from TF Serving's BatchingParameters
# (tensorflow_serving/servables/tensorflow/session_bundle_config.proto). "int64_value",
# "bool_value" and "string_value" are google.protobuf wrapper messages, written
# ``name { value: ... }``; "repeated_int64" and "bool" are plain fields (``name: ...``).
BATCHING_FIELDS: dict[str, str] = {
    "max_batch_size": "int64_value",
    "batch_timeout_micros": "int64_value",
    "max_enqueued_batches": "int64_value",
    "num_batch_threads": "int64_value",
    "thread_pool_name": "string_value",
    "allowed_batch_sizes": "repeated_int64",
    "pad_variable_length_inputs": "bool",
    "enable_large_batch_splitting": "bool_value",
    "max_execution_batch_size": "int64_value",
}

# MonitoringConfig { PrometheusConfig prometheus_config } from TF Serving's
# tensorflow_serving/config/monitoring_config.proto.
PROMETHEUS_FIELDS: dict[str, str] = {"enable": "bool", "path": "string"}

_PACKAGE = "tensorflow.serving"
_FDP = descriptor_pb2.FieldDescriptorProto
_WRAPPERS = {
    "int64_value": ".google.protobuf.Int64Value",
    "bool_value": ".google.protobuf.BoolValue",
    "string_value": ".google.protobuf.StringValue",
}
_SCALARS = {
    "bool": _FDP.TYPE_BOOL,
    "string": _FDP.TYPE_STRING,
    "repeated_int64": _FDP.TYPE_INT64,
}
_POOL_CACHE: list[Any] = []


def _add_fields(msg: descriptor_pb2.DescriptorProto, fields: dict[str, str]) -> None:
    # Field numbers do not matter for text format; names and types do.
    for number, (name, kind) in enumerate(fields.items(), start=1):
        field = msg.field.add(name=name, number=number, label=_FDP.LABEL_OPTIONAL)
        if kind in _WRAPPERS:
            field.type = _FDP.TYPE_MESSAGE
            field.type_name = _WRAPPERS[kind]
        else:
            field.type = _SCALARS[kind]
            if kind.startswith("repeated_"):
                field.label = _FDP.LABEL_REPEATED


def _validation_pool() -> Any:
    """A private descriptor pool holding BatchingParameters and MonitoringConfig."""
    if _POOL_CACHE:
        return _POOL_CACHE[0]
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(
        name="zoo/serving/tf_serving_text_configs.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    _add_fields(file.message_type.add(name="BatchingParameters"), BATCHING_FIELDS)
    _add_fields(file.message_type.add(name="PrometheusConfig"), PROMETHEUS_FIELDS)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        label=_FDP.LABEL_OPTIONAL,
        type=_FDP.TYPE_MESSAGE,
        type_name=f".{_PACKAGE}.PrometheusConfig",
    )
    pool.Add(file)
    _POOL_CACHE.append(pool)
    return pool


def _new_message(name: str) -> message.Message:
    pool = _validation_pool()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))()


def _to_dict(msg: message.Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.type == _FDP.TYPE_MESSAGE:
            if field.message_type.full_name.startswith("google.protobuf."):
                out[field.name] = value.value
            else:
                out[field.name] = _to_dict(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def validate_batching_parameters(path: str | Path) -> dict[str, Any]:
    """Check a TF Serving ``--batching_parameters_file``; return its fields as a dict.

    Wrapper fields read as plain values (``max_batch_size { value: 64 }`` gives
    ``{"max_batch_size": 64}``). Beyond parsing, the checks TF Serving's batching
    code makes: positive sizes and threads, non-negative timeout, and
    ``allowed_batch_sizes`` increasing and ending at the largest batch size.
    """
    path, text = _read(path)
    msg = _new_message("BatchingParameters")
    _parse_text(text, msg, path, pool=_validation_pool())
    params = _to_dict(msg)
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if name in params and params[name] < 1:
            raise ValueError(f"{path}: {name} must be >= 1; got {params[name]}")
    if params.get("batch_timeout_micros", 0) < 0:
        raise ValueError(
            f"{path}: batch_timeout_micros must be >= 0; got {params['batch_timeout_micros']}"
        )
    if "max_execution_batch_size" in params and params["max_execution_batch_size"] < 1:
        raise ValueError(
            f"{path}: max_execution_batch_size must be >= 1; "
            f"got {params['max_execution_batch_size']}"
        )
    sizes = params.get("allowed_batch_sizes", [])
    if sizes:
        if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
            raise ValueError(
                f"{path}: allowed_batch_sizes must be positive and strictly increasing; got {sizes}"
            )
        splitting = params.get("enable_large_batch_splitting", False)
        limit_name = "max_execution_batch_size" if splitting else "max_batch_size"
        limit = params.get(limit_name)
        if limit is not None and sizes[-1] != limit:
            raise ValueError(
                f"{path}: the last allowed_batch_sizes entry ({sizes[-1]}) must equal "
                f"{limit_name} ({limit})"
            )
    return params


def validate_monitoring_config(path: str | Path) -> dict[str, Any]:
    """Check a TF Serving ``--monitoring_config_file``; return it as a dict.

    Accepts ``prometheus_config { enable: <bool> path: "<url path>" }``; the path,
    when given, must start with "/".
    """
    path, text = _read(path)
    msg = _new_message("MonitoringConfig")
    _parse_text(text, msg, path, pool=_validation_pool())
    config = _to_dict(msg)
    url_path = config.get("prometheus_config", {}).get("path", "")
    if url_path and not url_path.startswith("/"):
        raise ValueError(
            f"{path}: prometheus_config.path must be a URL path starting with '/'; got {url_path!r}"
        )
    return config
