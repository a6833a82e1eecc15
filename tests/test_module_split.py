"""Issue 14, "files that say one thing": the local server is split into the REST format
(zoo.serving.rest_format), the loaded models (zoo.serving.model_server) and the HTTP
server (zoo.serving.server); the runner's training callbacks live in
zoo.recipes.callbacks. Each file stays under ~500 lines and each concept has one home."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from zoo.serving.rest_format import (  # noqa: E402
    InputSpec,
    RequestError,
    check_predict_body,
    predict_response,
)

ROOT = Path(__file__).resolve().parents[1]
SPLIT_FILES = (
    "serving/server.py",
    "serving/model_server.py",
    "serving/rest_format.py",
    "serving/servable.py",
    "serving/versions.py",
    "serving/batching.py",
    "recipes/runner.py",
    "recipes/callbacks.py",
)


@pytest.mark.parametrize("name", SPLIT_FILES)
def test_split_files_stay_under_500_lines(name):
    lines = (ROOT / name).read_text().count("\n")
    assert lines < 500, f"{name} has {lines} lines"


def defined_names(name: str) -> set[str]:
    tree = ast.parse((ROOT / name).read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    }


def test_each_concept_is_defined_in_one_module():
    homes = {
        "serving/servable.py": {"RequestError", "InputSpec", "call_signature", "check_arrays"},
        "serving/rest_format.py": {"predict_response", "tf_serving_floats"},
        "serving/model_server.py": {"ModelServer"},
        "serving/versions.py": {"ServableVersion", "ServedModel", "load_version", "warm_up"},
        "serving/batching.py": {"BatchScheduler", "BatchingOptions"},
        "serving/server.py": {"ServingServer", "make_server", "main", "build_arg_parser"},
        "serving/rest_server.py": {"ServingHTTPServer", "parse_route"},
        "serving/grpc_server.py": {"GrpcServer", "grpc_code"},
        "recipes/callbacks.py": {
            "ZooTensorBoard",
            "ImageGrids",
            "HistoryFile",
            "take_images",
            "check_logging",
            "latent_examples",
            "logging_callbacks",
        },
        "recipes/runner.py": {"build_data", "build_optimizer", "check_run_dir", "train"},
    }
    defined = {name: defined_names(name) for name in homes}
    for home, names in homes.items():
        assert names <= defined[home], f"{home} lacks {names - defined[home]}"
        for other, found in defined.items():
            if other != home:
                assert not names & found, f"{other} also defines {names & found}"


def test_runner_defines_no_callback_class():
    tree = ast.parse((ROOT / "recipes/runner.py").read_text())
    bases = [
        ast.unparse(base)
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for base in node.bases
    ]
    assert not [b for b in bases if "callbacks" in b or "Callback" in b], bases


def test_rest_format_and_model_server_import_without_tensorflow():
    code = (
        "import sys; import zoo.serving.rest_format, zoo.serving.model_server, "
        "zoo.serving.servable, "
        "zoo.serving.server; print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


class FakeServable:
    """A servable with one signature: ``x`` (float32 [-1, 2]) -> ``sum`` and ``tag_bytes``."""

    name = "fake"
    version = 3

    def __init__(self) -> None:
        def serve(x):
            total = tf.reduce_sum(x, axis=1)
            return {"sum": total, "tag_bytes": tf.strings.as_string(total) + b"\xff"}

        self.signatures = {"serving_default": serve}
        self.inputs = {"serving_default": {"x": InputSpec("x", tf.float32, (None, 2))}}


def test_row_and_columnar_predict_follow_tf_serving_json():
    servable = FakeServable()
    rows = predict_response({"instances": [[1, 2], [3, 4.5]]}, servable)
    assert [r["sum"] for r in rows["predictions"]] == [3.0, 7.5]
    # a *_bytes output is base64 in a {"b64": ...} object
    assert set(rows["predictions"][0]["tag_bytes"]) == {"b64"}
    columns = predict_response({"inputs": {"x": [[1, 1]]}}, servable)
    np.testing.assert_allclose(columns["outputs"]["sum"], [2.0])


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"instances": [[1, 2], [3]]}, 400, "input 'x' is ragged: instances[1] has shape [1]"),
        ({"inputs": [[1, 2]], "instances": [[1, 2]]}, 400, "expecting only one of 'inputs'"),
        ({"instances": [[1, 2]], "signature_name": "nope"}, 400, "model 'fake' version 3"),
        ({"instances": [["a", "b"]]}, 400, "expects shape [-1, 2] and dtype float32; got strings"),
        ({"instances": [[1, 2]] * 3}, 400, "batch size 3 is larger than max_batch_size 2"),
        ({"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
    ],
)
def test_predict_refusals_carry_tf_serving_status_and_text(body, status, message):
    with pytest.raises(RequestError) as info:
        predict_response(body, FakeServable(), max_batch_size=2)
    assert info.value.status == status
    assert message in info.value.message


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(RequestError, match="must be a JSON object") as info:
        check_predict_body([1, 2])
    assert info.value.status == 400
    assert check_predict_body({"inputs": []}) == {"inputs": []}
