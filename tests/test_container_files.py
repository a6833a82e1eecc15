"""serving/Dockerfile and serving/docker-compose.yml, checked without a Docker engine.

The container itself cannot run here (no Docker; tests/test_serving_configs.py holds the
live test, skipped without an engine). What can be checked is checked: the Dockerfile
parses and takes the TF Serving release as a build argument, the compose file validates
against the Compose Specification's JSON schema and passes that argument through, every
flag given to tensorflow_model_server is one it defines, and every config file a flag
names is copied into the image and validates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from zoo.serving import config as cfg

ROOT = Path(__file__).resolve().parents[1]
SERVING_DIR = ROOT / "serving"
DOCKERFILE = SERVING_DIR / "Dockerfile"
COMPOSE = SERVING_DIR / "docker-compose.yml"
README = ROOT / "README.md"
# The Compose Specification's schema, vendored (source, commit and licence: ATTRIBUTION.md).
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"

BUILD_ARG = "TF_SERVING_VERSION"
IMAGE = "tensorflow/serving"
RELEASE_TAG = re.compile(r"\d+\.\d+\.\d+")

# Every flag tensorflow_model_server defines: the names of the tensorflow::Flag(...) entries
# in tensorflow_serving/model_servers/main.cc of tensorflow/serving at tag 2.20.0 (commit
# bc7e9d2b9a419294c4526e293c2df8727b0d3116; unchanged on master at 9d981c5c, 2026-07-30).
TF_SERVING_FLAGS = frozenset(
    {
        "allow_version_labels_for_unavailable_models",
        "batching_parameters_file",
        "enable_batching",
        "enable_grpc_healthcheck_service",
        "enable_model_warmup",
        "enable_per_model_batching_parameters",
        "enable_profiler",
        "enable_serialization_as_tensor_content",
        "enable_signature_method_name_check",
        "file_system_poll_wait_seconds",
        "flush_filesystem_caches",
        "grpc_channel_arguments",
        "grpc_max_threads",
        "grpc_socket_path",
        "load_retry_interval_micros",
        "max_num_load_retries",
        "mixed_precision",
        "model_base_path",
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "model_name",
        "monitoring_config_file",
        "num_load_threads",
        "num_request_iterations_for_warmup",
        "num_tflite_interpreters_per_pool",
        "num_tflite_pools",
        "num_unload_threads",
        "per_process_gpu_memory_fraction",
        "platform_config_file",
        "port",
        "prefer_tflite_model",
        "remove_unused_fields_from_bundle_metagraph",
        "rest_api_enable_cors_support",
        "rest_api_num_threads",
        "rest_api_port",
        "rest_api_timeout_in_ms",
        "saved_model_tags",
        "skip_initialize_tpu",
        "ssl_config_file",
        "tensorflow_inter_op_parallelism",
        "tensorflow_intra_op_parallelism",
        "tensorflow_session_config_file",
        "tensorflow_session_parallelism",
        "thread_pool_factory_config_file",
        "use_alts_credentials",
        "version",
        "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled",
    }
)

# The image's tf_serving_entrypoint.sh runs tensorflow_model_server with these before "$@"
# (tensorflow_serving/tools/docker/Dockerfile at the same tag).
ENTRYPOINT_FLAGS = ("--port=8500", "--rest_api_port=8501", "--model_name", "--model_base_path")

# What each config-file flag reads, and the check the local server applies to it.
CONFIG_FILE_CHECKS: dict[str, Callable[[Path], Any]] = {
    "model_config_file": cfg.load_model_server_config,
    "batching_parameters_file": cfg.validate_batching_parameters,
    "monitoring_config_file": cfg.validate_monitoring_config,
}


# --------------------------------------------------------------------------- helpers


def _parse_dockerfile(path: Path = DOCKERFILE, **build_args: str) -> DockerfileParser:
    return DockerfileParser(path=str(path), build_args=build_args or None)


def _instructions(parser: DockerfileParser) -> list[tuple[str, str]]:
    return [
        (s["instruction"], s["value"]) for s in parser.structure if s["instruction"] != "COMMENT"
    ]


def _arg_default(parser: DockerfileParser, name: str) -> str | None:
    """The default of ``ARG name=default`` (None when the ARG has no default or is absent)."""
    for keyword, value in _instructions(parser):
        key, sep, default = value.partition("=")
        if keyword == "ARG" and key.strip() == name:
            return default.strip().strip("\"'") if sep else None
    return None


def _cmd_flags(parser: DockerfileParser) -> list[str]:
    (cmd,) = [value for keyword, value in _instructions(parser) if keyword == "CMD"]
    return json.loads(cmd)  # exec form: appended to the image's entrypoint as "$@"


def _flag_name(flag: str) -> str:
    return flag.removeprefix("--").partition("=")[0]


def unknown_flags(flags: list[str]) -> list[str]:
    """The flags among ``flags`` that tensorflow_model_server does not define."""
    return [f for f in flags if not f.startswith("--") or _flag_name(f) not in TF_SERVING_FLAGS]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _service(doc: dict[str, Any]) -> dict[str, Any]:
    (service,) = doc["services"].values()
    return service


def _schema_errors(doc: Any) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    cls = jsonschema.validators.validator_for(schema)  # the draft its "$schema" names
    cls.check_schema(schema)
    validator = cls(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def _build_args(service: dict[str, Any]) -> dict[str, str | None]:
    """build.args as a mapping; a list entry without '=' maps to None (taken from the env)."""
    args = service["build"].get("args", {})
    if isinstance(args, dict):
        return {k: None if v is None else str(v) for k, v in args.items()}
    return {k: (v if sep else None) for k, sep, v in (a.partition("=") for a in args)}


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_takes_the_tf_serving_release_as_a_build_arg_with_a_release_default():
    parser = _parse_dockerfile()
    instructions = _instructions(parser)
    # ARG before FROM: the only place an ARG can parametrise the base image.
    assert instructions[0][0] == "ARG" and instructions[1][0] == "FROM", instructions[:2]
    default = _arg_default(parser, BUILD_ARG)
    assert default is not None and RELEASE_TAG.fullmatch(default), default
    assert [v for k, v in instructions if k == "FROM"] == [f"{IMAGE}:${{{BUILD_ARG}}}"]
    assert parser.baseimage == f"{IMAGE}:{default}"
    # a newer release, passed as `--build-arg TF_SERVING_VERSION=...`, replaces the default
    assert _parse_dockerfile(**{BUILD_ARG: "2.21.0"}).baseimage == f"{IMAGE}:2.21.0"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("FROM tensorflow/serving:2.21.0\n", "no ARG"),
        (f"ARG {BUILD_ARG}\nFROM {IMAGE}:${{{BUILD_ARG}}}\n", "no default"),
        (f"ARG {BUILD_ARG}=latest\nFROM {IMAGE}:${{{BUILD_ARG}}}\n", "not a release"),
    ],
)
def test_build_arg_check_rejects_a_pinned_from_or_a_missing_or_floating_default(
    tmp_path, text, problem
):
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    default = _arg_default(_parse_dockerfile(path), BUILD_ARG)
    assert default is None or not RELEASE_TAG.fullmatch(default), problem


def test_dockerfile_copies_only_files_that_exist_and_passes_flags_to_the_entrypoint():
    parser = _parse_dockerfile()
    instructions = _instructions(parser)
    keywords = [k for k, _ in instructions]
    assert "ENTRYPOINT" not in keywords  # the image's tf_serving_entrypoint.sh appends "$@"
    copies = [value.split() for k, value in instructions if k in ("COPY", "ADD")]
    assert copies and all(parts[-1] == "/config/" for parts in copies)
    sources = [src for parts in copies for src in parts[:-1]]
    assert {"models.config", "batching_parameters.txt", "monitoring.config"} <= set(sources)
    for src in sources:  # the build context is serving/
        assert (SERVING_DIR / src).is_file(), src
    exposed = {p for k, v in instructions if k == "EXPOSE" for p in v.split()}
    assert exposed == {"8500", "8501"}
    flags = _cmd_flags(parser)
    assert "--model_config_file=/config/models.config" in flags
    assert "--enable_batching" in flags
    assert "--batching_parameters_file=/config/batching_parameters.txt" in flags
    assert "--monitoring_config_file=/config/monitoring.config" in flags
    assert "--rest_api_port=8501" in flags and "--port=8500" in flags


# --------------------------------------------------------------------------- flags


def test_every_flag_given_to_tensorflow_model_server_is_one_it_defines():
    flags = [*ENTRYPOINT_FLAGS, *_cmd_flags(_parse_dockerfile())]
    command = _service(_compose()).get("command", [])
    flags += command.split() if isinstance(command, str) else command
    assert unknown_flags(flags) == []


def test_flag_check_catches_misspelt_and_removed_flags():
    bad = ["--enable_batchng", "--rest_api_host=0.0.0.0", "--max_batch_size=8", "port=8500"]
    assert unknown_flags(["--enable_batching", *bad]) == bad


def test_every_config_file_a_flag_names_is_copied_into_the_image_and_validates():
    parser = _parse_dockerfile()
    copied = {
        f"{parts[-1].rstrip('/')}/{Path(src).name}": SERVING_DIR / src
        for k, value in _instructions(parser)
        if k == "COPY"
        for parts in [value.split()]
        for src in parts[:-1]
    }
    file_flags = {_flag_name(f): f.partition("=")[2] for f in _cmd_flags(parser) if "_file=" in f}
    assert set(file_flags) == set(CONFIG_FILE_CHECKS), file_flags
    for name, target in file_flags.items():
        assert target in copied, f"--{name}={target} is not COPY'd into the image"
        CONFIG_FILE_CHECKS[name](copied[target])  # raises ValueError naming the problem


# --------------------------------------------------------------------------- compose


def test_compose_file_validates_against_the_compose_specification_schema():
    assert _schema_errors(_compose()) == []


def test_compose_schema_check_rejects_a_misspelt_key_and_a_wrong_type():
    doc = _compose()
    service = _service(doc)
    service["healthcheck"]["intervall"] = service["healthcheck"].pop("interval")
    service["ports"] = "8501:8501"
    errors = _schema_errors(doc)
    assert any("intervall" in e for e in errors), errors
    assert any(e.startswith("services/tf-serving/ports") for e in errors), errors


def test_compose_passes_the_tf_serving_build_arg_through_to_the_dockerfile():
    service = _service(_compose())
    assert service["build"]["context"] == "." and service["build"]["dockerfile"] == "Dockerfile"
    args = _build_args(service)
    # No value: Compose takes it from the environment, else the Dockerfile's default holds
    # (one home for the default). A value here would shadow the Dockerfile's ARG default.
    assert args == {BUILD_ARG: None}, args
    assert _arg_default(_parse_dockerfile(), BUILD_ARG) is not None


def test_compose_builds_the_image_mounts_models_and_checks_health_without_curl():
    service = _service(_compose())
    assert service["volumes"] == ["./models:/models:ro"]
    # gRPC and REST, published on the host's loopback only
    assert sorted(service["ports"]) == ["127.0.0.1:8500:8500", "127.0.0.1:8501:8501"]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "bash"
    assert not any(tool in " ".join(test) for tool in ("curl", "wget"))
    assert "/dev/tcp/127.0.0.1/8501" in test[-1]
    assert "/v1/models/dcgan" in test[-1]


# --------------------------------------------------------------------------- README


def test_readme_names_the_default_release_its_date_and_how_to_pass_a_newer_one():
    default = _arg_default(_parse_dockerfile(), BUILD_ARG)
    text = README.read_text()
    assert f"tensorflow/serving:{default}" in text
    # the date it was last checked follows the default within a sentence or two
    assert re.search(rf"{re.escape(default)}[\s\S]{{0,200}}checked \d{{4}}-\d{{2}}-\d{{2}}", text)
    assert f"--build-arg {BUILD_ARG}=" in text
    assert f"{BUILD_ARG}=" in text and "docker compose" in text
