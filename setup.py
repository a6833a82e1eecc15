"""Packaging for the generative model zoo.

Only ``zoo`` is installed at the top of site-packages: the repository's
``recipes/``, ``export/`` and ``serving/`` folders become ``zoo.recipes``,
``zoo.export`` and ``zoo.serving`` through ``package_dir``.
"""

from setuptools import find_packages, setup

PACKAGE_DIR = {
    "zoo": "zoo",
    "zoo.recipes": "recipes",
    "zoo.export": "export",
    "zoo.serving": "serving",
}

# Every folder with an __init__.py under the mapped folders, so a new subpackage
# (zoo/tasks, zoo/diffusion, ...) is never left out of a wheel.
PACKAGES = [
    f"{package}.{sub}" if sub else package
    for package, folder in PACKAGE_DIR.items()
    for sub in ["", *find_packages(folder)]
]

INSTALL_REQUIRES = [
    "tensorflow==2.21.*",
    "keras>=3.15,<4",
    "tensorflow-probability==0.25.*",
    "tf-keras==2.21.*",
    "tensorflow-datasets>=4.9",
    "importlib_resources",  # imported by tensorflow-datasets' downloads, not declared by it
    "tensorboard==2.21.*",
    "numpy>=1.26",
    "pillow>=10",
    "matplotlib>=3.8",
    "scikit-image==0.26.*",  # its wheel ships the CC0/public-domain photos of photos_x4
    "tf2onnx>=1.17",
    "onnx>=1.17",
    "onnxruntime>=1.20",
    "tensorflow-serving-api==2.21.*",
    "aiohttp>=3.10",  # zoo serve: REST transport (asyncio HTTP/1.1 server)
    "grpcio>=1.60",  # zoo serve: TF Serving's gRPC PredictionService
    "prometheus-client>=0.20",  # zoo serve: metrics at monitoring.config's path
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3.6",
        "ruff==0.17.*",
        "dockerfile-parse>=2.0",
        "jsonschema>=4.20",
        "pyyaml>=6",  # tests/test_container_files.py reads serving/docker-compose.yml
    ]
}

setup(
    name="zoo",
    version="0.1.0",
    description=(
        "A TensorFlow/Keras zoo of generative models that train, export and serve the same way."
    ),
    python_requires=">=3.10",
    package_dir=PACKAGE_DIR,
    packages=PACKAGES,
    package_data={
        "zoo.data": ["sample/*.npz", "sample/*.md"],
        "zoo.metrics": ["classifier/*.weights.h5", "classifier/*.md"],
        "zoo.recipes": ["*.toml"],
        "zoo.serving": ["*.config", "*.txt", "*.yml", "Dockerfile"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["zoo=zoo.cli:main"]},
)
