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
