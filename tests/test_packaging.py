"""What a non-editable install holds: every module of the four source folders, under
``zoo`` only, with the package data the code reads (setup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_layering import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> where it lands in site-packages (setup.py's package_dir).
INSTALLED_AS = {folder: package.replace(".", "/") for folder, package in PACKAGES.items()}


def test_a_build_holds_every_module_and_the_package_data(tmp_path):
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo"]  # nothing else at the top
    missing = []
    for folder, target in INSTALLED_AS.items():
        for module in (ROOT / folder).rglob("*.py"):
            relative = module.relative_to(ROOT / folder)
            if "__pycache__" not in relative.parts and not (tmp_path / target / relative).exists():
                missing.append(f"{folder}/{relative}")
    assert not missing, f"left out of the build: {missing}"
    for data in ("zoo/recipes/dcgan_mnist.toml", "zoo/serving/Dockerfile"):
        assert (tmp_path / data).exists(), data
    assert list((tmp_path / "zoo/data/sample").glob("*.npz"))
