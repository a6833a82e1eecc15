"""TF Serving's REST rules the JSON codec follows (issue 15, section 2), on a fake
servable: an empty signature name is ``serving_default``, unknown keys of a columnar
``inputs`` object are ignored, a float32 input refuses 1e39 and accepts integers beyond
int64, and deeply nested JSON is a 400, not a 500."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_module_split import FakeServable
from zoo.serving.rest_format import (
    MAX_JSON_DEPTH,
    RequestError,
    check_predict_body,
    json_depth,
    predict_response,
    tf_serving_floats,
)


def test_empty_signature_name_means_serving_default():
    out = predict_response({"signature_name": "", "instances": [[1, 2]]}, FakeServable())
    assert out["predictions"][0]["sum"] == 3.0


def test_unknown_columnar_keys_are_ignored_missing_ones_are_not():
    out = predict_response({"inputs": {"x": [[1, 2]], "extra": [7]}}, FakeServable())
    np.testing.assert_allclose(out["outputs"]["sum"], [3.0])
    with pytest.raises(RequestError, match="missing input\\(s\\) 'x'") as info:
        predict_response({"inputs": {"extra": [7]}}, FakeServable())
    assert info.value.status == 400


def test_float32_refuses_values_out_of_range():
    with pytest.raises(RequestError, match="out of its range") as info:
        predict_response({"instances": [[1e39, 0]]}, FakeServable())
    assert info.value.status == 400


def test_integers_beyond_int64_are_numbers_for_a_float_input():
    out = predict_response({"instances": [[2**70, 1]]}, FakeServable())
    assert out["predictions"][0]["sum"] == pytest.approx(float(2**70), rel=1e-6)


def test_json_depth_counts_without_recursion():
    assert json_depth(1) == 0 and json_depth([[1, 2], [3]]) == 2
    assert json_depth({"a": [{"b": [1]}]}) == 4
    deep: list = []
    node = deep
    for _ in range(5000):  # deeper than Python's recursion limit
        node.append([])
        node = node[0]
    assert json_depth(deep) > MAX_JSON_DEPTH


def test_deeply_nested_bodies_are_a_client_error():
    body = {"instances": json.loads("[" * 600 + "1" + "]" * 600)}
    with pytest.raises(RequestError, match=f"deeper than {MAX_JSON_DEPTH}") as info:
        check_predict_body(body)
    assert info.value.status == 400
    assert check_predict_body({"instances": [[1, 2]]})  # a normal body passes


def _tf_serving_text(value: np.float32 | np.float64) -> str:
    """TF Serving's rule, written with printf as its WriteDecimal does: six significant
    digits when they read back as the same value, else max_digits10."""
    kind = type(value)
    text = f"{value:g}"
    if kind(text) != value:
        text = f"{value:.{9 if kind is np.float32 else 17}g}"
    return text


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_floats_print_as_tf_serving_prints_them(dtype):
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.uniform(-1, 1, 3000),
            rng.normal(size=3000) * 10.0 ** rng.integers(-30, 30, 3000),
            [0.2, 0.1, 1.0, -0.0, 9e6, 3e-5, 123456789.0, 0.636961699],
        ]
    ).astype(dtype)
    printed = json.dumps(tf_serving_floats(values).tolist())
    read_back = json.loads(printed)
    expected = [float(_tf_serving_text(v)) for v in values]
    assert read_back == expected  # the same decimal numbers TF Serving writes
    assert np.array_equal(np.asarray(read_back, dtype), values)  # and they round-trip
    # short where it can be: float32 0.2 is not widened to 0.20000000298023224
    assert json.dumps(tf_serving_floats(np.array([0.2], np.float32)).tolist()) == "[0.2]"


def test_non_finite_outputs_print_as_tf_serving_tokens():
    printed = json.dumps(
        tf_serving_floats(np.array([np.nan, np.inf, -np.inf], np.float32)).tolist()
    )
    assert printed == "[NaN, Infinity, -Infinity]"
