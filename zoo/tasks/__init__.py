"""Tasks: what a model can do, declared by its trainer and read by the pipeline.

- :mod:`zoo.tasks.protocols`: the task interfaces (Sampler, Generator, Reconstructor,
  AnomalyScorer, LikelihoodModel, BoundModel, Translator), each with its contract;
- :mod:`zoo.tasks.declaration`: :class:`TaskDeclaration`, one per trainer, and
  :func:`declaration_of`;
- :mod:`zoo.tasks.signatures`: serving signatures as data (with parity tolerances) and the
  builders declarations share;
- :mod:`zoo.tasks.examples`: the examples a model takes (images, sequences) and their checks.
"""

from zoo.tasks.declaration import PARITY_BATCH, TaskDeclaration, declaration_of
from zoo.tasks.examples import ExampleKind, Images, Sequences
from zoo.tasks.protocols import (
    AnomalyScorer,
    BoundModel,
    Generator,
    LikelihoodModel,
    Reconstructor,
    Sampler,
    Translator,
)
from zoo.tasks.signatures import Signature, SignatureBuilder, SignatureSet, Tolerance

__all__ = [
    "PARITY_BATCH",
    "AnomalyScorer",
    "BoundModel",
    "ExampleKind",
    "Generator",
    "Images",
    "LikelihoodModel",
    "Reconstructor",
    "Sampler",
    "Sequences",
    "Signature",
    "SignatureBuilder",
    "SignatureSet",
    "TaskDeclaration",
    "Tolerance",
    "Translator",
    "declaration_of",
]
