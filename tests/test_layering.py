"""The package imports only downward (docs/ARCHITECTURE.md): core modules (zoo/) <
``zoo.recipes`` (recipes/) < ``zoo.export`` (export/) < ``zoo.serving`` (serving/) <
entry points (``zoo.cli``, ``zoo.__main__``, the facade ``zoo/__init__.py``). Every
import statement counts: top level, inside functions, under ``TYPE_CHECKING``, relative.
Also: each concept moved by issue 14 has one home, and no text cites outside the repo."""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as (setup.py package_dir).
PACKAGES = {
    "zoo": "zoo",
    "recipes": "zoo.recipes",
    "export": "zoo.export",
    "serving": "zoo.serving",
}
#: Layers from the bottom; a module not named here is core (layer 0).
LAYERS = ("core", "zoo.recipes", "zoo.export", "zoo.serving", "entry point")
ENTRY_POINTS = ("zoo", "zoo.cli", "zoo.__main__")


@functools.cache
def text_files() -> tuple[str, ...]:
    """The repository's text files (tracked or new, not ignored), relative to ROOT."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return tuple(
        name
        for name in names
        if name.endswith((".py", ".md", ".toml", ".txt", ".cfg", ".yml", "Makefile"))
        and name != "tests/test_layering.py"
        and (ROOT / name).is_file()
    )


def layer_of(module: str) -> int:
    """The layer index of a dotted ``zoo`` module name (see :data:`LAYERS`)."""
    if module in ENTRY_POINTS:
        return len(LAYERS) - 1
    for index in range(len(LAYERS) - 2, 0, -1):
        if module == LAYERS[index] or module.startswith(LAYERS[index] + "."):
            return index
    return 0


def source_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package, by dotted name, from the source folders under ``root``."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = [*package.split("."), *path.relative_to(root / folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_modules(module: str, path: Path, known: set[str]) -> list[tuple[int, str, str]]:
    """``(line, imported module, statement)`` for each ``zoo`` import in ``path``.
    ``from package import name`` counts as importing ``package.name`` when that is a
    module (``from zoo import recipes``), else as importing ``package``."""
    source = path.read_text()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        statement = ast.get_source_segment(source, node) or ""
        found += [
            (node.lineno, name, " ".join(statement.split()))
            for name in dict.fromkeys(names)  # once per module a statement imports
            if name == "zoo" or name.startswith("zoo.")
        ]
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    """One line per import of a higher layer: ``file:line: statement (layer -> layer)``."""
    modules = source_modules(root)
    problems = []
    for module, path in modules.items():
        mine = layer_of(module)
        for line, name, statement in imported_modules(module, path, set(modules)):
            if layer_of(name) > mine:
                where = path.relative_to(root).as_posix()
                problems.append(
                    (where, line, f"{where}:{line}: {statement} "
                     f"({module} is {LAYERS[mine]}; {name} is {LAYERS[layer_of(name)]})")
                )  # fmt: skip
    return [text for *_, text in sorted(problems)]


def test_no_module_imports_a_higher_layer():
    problems = upward_imports()
    assert not problems, "imports from a higher layer:\n" + "\n".join(problems)


def test_the_check_names_file_line_and_import_of_each_upward_import(tmp_path):
    """The checker on a small tree with one upward import of each form it must catch:
    top level, in a function, relative, ``import zoo.x``, ``from zoo import x``."""
    for folder in PACKAGES:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "zoo" / "core.py").write_text(
        "from zoo.export.calibration import Threshold\n"
        "def f():\n"
        "    import zoo.recipes.runs\n"
        "    from zoo import serving\n"
    )
    (tmp_path / "zoo" / "registry.py").write_text("")
    (tmp_path / "zoo" / "cli.py").write_text("from zoo.serving import demo\n")  # entry point
    (tmp_path / "recipes" / "runs.py").write_text("from ..export import exporter\n")
    (tmp_path / "export" / "calibration.py").write_text("from zoo import registry\n")
    (tmp_path / "export" / "exporter.py").write_text("from zoo.recipes import runs\n")
    assert upward_imports(tmp_path) == [
        "recipes/runs.py:1: from ..export import exporter (zoo.recipes.runs is zoo.recipes; "
        "zoo.export.exporter is zoo.export)",
        "zoo/core.py:1: from zoo.export.calibration import Threshold (zoo.core is core; "
        "zoo.export.calibration is zoo.export)",
        "zoo/core.py:3: import zoo.recipes.runs (zoo.core is core; zoo.recipes.runs is "
        "zoo.recipes)",
        "zoo/core.py:4: from zoo import serving (zoo.core is core; zoo.serving is zoo.serving)",
    ]


@pytest.mark.parametrize(
    ("gone", "home"),
    [
        ("zoo.export.calibration", "zoo.calibration"),
        ("zoo.runs", "zoo.recipes.runs"),
        ("zoo.demo", "zoo.serving.demo"),
    ],
)
def test_each_moved_concept_has_one_home(gone, home):
    modules = source_modules()
    assert home in modules and gone not in modules, f"{gone} is still a module beside {home}"
    stale = [
        f"{name}:{number}: {line.strip()}"
        for name in text_files()
        if not name.startswith("bench/reports/")  # dated records of past runs
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if re.search(rf"\b{re.escape(gone)}\b", line)
    ]
    parent, _, leaf = gone.rpartition(".")
    stale += [  # from zoo.export import (..., calibration, ...) names it too
        f"{name}:{node.lineno}: from {parent} import {leaf}"
        for name in text_files()
        if name.endswith(".py")
        for node in ast.walk(ast.parse((ROOT / name).read_text()))
        if isinstance(node, ast.ImportFrom)
        and node.module == parent
        and leaf in {alias.name for alias in node.names}
    ]
    assert not stale, f"{gone} is still named (now {home}):\n" + "\n".join(stale)


def test_the_facade_and_export_keep_their_public_names():
    """``zoo.load_run`` (home: zoo.recipes.runs) and ``zoo.export.Threshold`` (home:
    zoo.calibration) are the same objects as at their homes; ``import zoo``, the
    threshold maths and ``zoo.load_run`` itself load no TensorFlow."""
    script = (
        "import sys, zoo, zoo.calibration, zoo.metrics.anomaly\n"
        "import zoo.recipes.runs as runs\n"
        "assert zoo.load_run is runs.load_run and 'load_run' in zoo.__all__\n"
        "print('tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "False\n", done.stderr[-2000:]
    import zoo.export

    import zoo.calibration

    for name in ("Threshold", "ScoreNormalization", "calibrate_threshold"):
        assert getattr(zoo.export, name) is getattr(zoo.calibration, name)


def test_threshold_from_zoo_calibration_is_accepted_by_the_metrics():
    """zoo.metrics.anomaly imports its Threshold type from the core (it used to look
    zoo.export.calibration up in sys.modules to avoid importing zoo.export)."""
    from zoo.calibration import calibrate_threshold
    from zoo.metrics.anomaly import evaluate_scores

    normal = np.linspace(0.0, 1.0, 1000)
    threshold = calibrate_threshold(normal, target_fpr=0.05)
    scores = np.concatenate([normal[:100], np.full(100, 2.0)])
    report = evaluate_scores(scores, np.repeat([0, 1], 100), threshold)
    assert report.threshold == pytest.approx(threshold.value)
    assert report.threshold_method == "quantile" and report.recall == 1.0


def test_registry_reads_a_run_folder_without_the_recipe_layer(tmp_path):
    """zoo.registry builds a run's model from its recipe.toml as plain TOML (the recipe
    layer is above it), with the recipe's seed, and says when the file names no model."""
    from zoo.recipes import load_recipe

    from zoo import registry

    recipe = load_recipe("vae_mnist", ["model_config.latent_dim=3"])
    (tmp_path / "recipe.toml").write_text(recipe.to_toml())
    assert registry.run_model(tmp_path) == ("vae", recipe.build_config())
    config = registry.run_model(tmp_path)[1]
    assert config["latent_dim"] == 3 and config["seed"] == recipe.seed
    (tmp_path / "recipe.toml").write_text('name = "x"\n')
    with pytest.raises(registry.ConfigError, match=r"model = \"<name>\""):
        registry.run_model(tmp_path)


def test_core_evaluations_take_a_loaded_model(tmp_path):
    """zoo.anomaly and zoo.likelihood evaluate a model object (no run folder, no recipe);
    the run-level wrappers live in zoo.recipes.evaluation."""
    from zoo.recipes import evaluation

    import zoo
    from zoo.anomaly import evaluate_model as evaluate_anomaly
    from zoo.likelihood import evaluate_model as evaluate_likelihood_of

    assert callable(evaluation.evaluate_anomaly_run)
    assert callable(evaluation.evaluate_likelihood_run)
    vae = zoo.load("mlp_vae_tiny")
    result, out = evaluate_likelihood_of(vae, tmp_path / "lik", target="in memory", k=4, n=10)
    assert out == tmp_path / "lik" and result["target"] == "in memory" and result["n"] == 10
    assert json.loads((out / "likelihood.json").read_text())["k"] == 4
    report, out, data = evaluate_anomaly(
        zoo.load("dense_ae_tiny"), tmp_path / "ano", normal_classes=[1], target_fpr=0.2
    )
    assert out == tmp_path / "ano" and (out / "report.md").is_file()
    assert 0.0 <= report.auroc <= 1.0 and "normal digits [1]" in data.description


def test_evaluation_dir_and_recipe_classes_of_a_run(tmp_path):
    from zoo.recipes import load_recipe
    from zoo.recipes.evaluation import evaluation_dir, recipe_classes

    run = tmp_path / "run"
    run.mkdir()
    assert evaluation_dir(run, None) == run / "evaluation"
    assert evaluation_dir(run / "model.keras", None) == Path("evaluation")
    assert evaluation_dir(run, tmp_path / "x") == tmp_path / "x"
    assert recipe_classes(run) is None
    (run / "recipe.toml").write_text(load_recipe("conv_ae_mnist", ["data.classes=[3]"]).to_toml())
    assert recipe_classes(run) == [3]


#: Text that points outside the repository (an old design document, a sibling folder).
OUTSIDE_REFERENCES = re.compile(r"DESIGN\s*§|\.\./shared\b")


def test_no_file_cites_anything_outside_the_repository():
    hits = [
        f"{name}:{number}: {line.strip()}"
        for name in text_files()
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if OUTSIDE_REFERENCES.search(line)
    ]
    assert not hits, "references outside the repository:\n" + "\n".join(hits)
