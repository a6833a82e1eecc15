"""Input pipelines for the zoo: sources, batching and image output.

Every source returns an unbatched ``tf.data.Dataset`` of float32 images in
[0, 1] with shape exactly ``image_shape`` (or ``(image, int64 label)`` pairs
with ``with_labels=True``); :func:`batch` turns it into training batches.
"""

from zoo.data.core import DataError, DataWarning, to_float_images
from zoo.data.images import image_grid, save_png
from zoo.data.pairs import (
    bundled_task,
    from_paired_folder,
    from_pairs,
    from_tfds_unpaired,
    from_unpaired_folders,
    load_animals,
    pair_transforms,
)
from zoo.data.pipeline import batch
from zoo.data.sources import (
    from_folder,
    from_numpy,
    from_sample,
    from_tfds,
    load_sample,
    make_dataset,
)
from zoo.data.timeseries import (
    ANOMALY_KINDS,
    SyntheticSeries,
    from_series,
    pad_sequences,
    per_sequence_scores,
    sequence_mask,
    sliding_windows,
    standardize,
    synthetic_series,
    top_step_count,
    window_labels,
)

__all__ = [
    "ANOMALY_KINDS",
    "DataError",
    "DataWarning",
    "SyntheticSeries",
    "batch",
    "bundled_task",
    "from_folder",
    "from_numpy",
    "from_paired_folder",
    "from_pairs",
    "from_sample",
    "from_series",
    "from_tfds",
    "from_tfds_unpaired",
    "from_unpaired_folders",
    "image_grid",
    "load_animals",
    "load_sample",
    "make_dataset",
    "pad_sequences",
    "pair_transforms",
    "per_sequence_scores",
    "save_png",
    "sequence_mask",
    "sliding_windows",
    "standardize",
    "synthetic_series",
    "to_float_images",
    "top_step_count",
    "window_labels",
]
