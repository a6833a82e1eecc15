"""Issue 13, speed and feedback: `zoo list` and refusing a bad recipe run without
TensorFlow, `zoo list` columns fit long names, and TensorFlow's housekeeping lines
stay out of the zoo's stderr."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo import cli

ZOO = str(Path(sys.executable).with_name("zoo"))


def run_main(argv: list[str]) -> subprocess.CompletedProcess:
    """``zoo.cli.main(argv)`` in a fresh interpreter; stdout's last line says whether
    TensorFlow was imported."""
    script = f"""
        import sys
        from zoo.cli import main
        rc = main({argv!r})
        print("exit", rc, "tensorflow" in sys.modules)
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "argv",
    [["list"], ["list", "--recipes"], ["list", "*gan*", "--tiny"]],
)
def test_listing_does_not_import_tensorflow(argv):
    done = run_main(argv)
    assert done.stdout.splitlines()[-1] == "exit 0 False", done.stderr[-2000:]
    assert "dcgan" in done.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model_config.latnt_dim=3"], "'latnt_dim' (did you mean 'latent_dim'?)"),
        (["epoch=3"], "unknown recipe key(s) in recipe"),
        (["data.batch_sise=3"], "'batch_sise' (did you mean 'batch_size'?)"),
        (["model_config.filters=[4,0]"], "filters must be a non-empty list of positive integers"),
    ],
)
def test_a_bad_set_is_refused_without_importing_tensorflow(tmp_path, overrides, message):
    argv = ["train", "dcgan_mnist", "--logdir", str(tmp_path)]
    for item in overrides:
        argv += ["--set", item]
    done = run_main(argv)
    assert done.stdout.splitlines()[-1] == "exit 2 False", done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("zoo train: error: ") and message in line


def test_list_columns_stay_aligned_for_long_names(capsys):
    from zoo.recipes import load_recipe

    from zoo import registry

    assert cli.main(["list", "--tiny"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    family, description = header.index("family"), header.index("description")
    assert any(row.startswith("overcomplete_ae_tiny ") for row in rows)  # 20 characters
    for row in rows:
        spec = registry.get_spec(row.split()[0])
        assert row[family:].startswith(spec.family + " "), row
        assert row[description:] == spec.description, row
    assert cli.main(["list", "--recipes"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    model, description = header.index("model"), header.index("description")
    assert any(row.startswith("overcomplete_ae_mnist ") for row in rows)  # 21 characters
    for row in rows:
        recipe = load_recipe(row.split()[0])
        assert row[model:].startswith(recipe.model + " "), row
        assert row[description:] == recipe.description, row


# -- quiet output ----------------------------------------------------------------------------
#: Lines observed on stderr before the fix (TensorFlow 2.21 on a machine without a GPU).
OBSERVED_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796052792.781806    4855 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796052815.367237    5094 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]


def test_native_noise_pattern_drops_the_observed_lines_only():
    assert all(cli.NATIVE_NOISE.match(line) for line in OBSERVED_NOISE)
    kept = [
        "E0000 00:00:1796052815.367237    5094 op_kernel.cc:1830] OP_REQUIRES failed: OOM",
        "zoo train: error: something the user must read",
        "Traceback (most recent call last):",
        "WARNING: a warning of our own",
    ]
    assert not any(cli.NATIVE_NOISE.match(line) for line in kept)


def test_deprecation_notices_are_filtered_from_the_tensorflow_logger_only():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        cli._quiet_tensorflow()
        cli._quiet_tensorflow()  # idempotent: one filter
        assert tf_logger.filters.count(cli._not_a_deprecation) == 1
        tf_logger.warning(
            "From export/savedmodel.py:93: load (from tensorflow.python.saved_model.loader_impl) "
            "is deprecated and will be removed in a future version."
        )
        tf_logger.warning("Value in checkpoint could not be found")
    finally:
        tf_logger.removeHandler(handler)
    assert seen == ["Value in checkpoint could not be found"]
    assert logging.getLogger("tf2onnx.shape_inference").getEffectiveLevel() == logging.ERROR


def test_a_tensorflow_command_prints_no_native_noise(tmp_path):
    out = tmp_path / "grid.png"
    done = subprocess.run(
        [ZOO, "sample", "dcgan_tiny", "--n", "4", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file() and done.stdout.strip() == f"wrote {out}"
    for marker in ("absl::InitializeLog", "cudart_stub", "cuInit", "is deprecated"):
        assert marker not in done.stderr, done.stderr
    assert done.stderr.strip() == ""


def test_the_zoos_own_warnings_print_as_one_line(monkeypatch):
    import warnings

    from zoo.data import DataWarning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after
    cli._quiet_tensorflow()
    text = warnings.formatwarning(DataWarning("3 files skipped"), DataWarning, "/x/sources.py", 9)
    assert text == "zoo: warning: 3 files skipped\n"
    other = warnings.formatwarning(UserWarning("keras says"), UserWarning, "/x/keras.py", 9)
    assert other.startswith("/x/keras.py:9: UserWarning: keras says")
