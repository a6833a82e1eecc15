"""Input pipelines for the zoo: sources, batching and image output.

Every source returns an unbatched ``tf.data.Dataset`` of float32 images in
[0, 1] with shape exactly ``image_shape`` (or ``(image, int64 label)`` pairs
with ``with_labels=True``); :func:`batch` turns it into training batches.
"""

from zoo.data.core import DataError, to_float_images
from zoo.data.images import image_grid, save_png
from zoo.data.pipeline import batch
from zoo.data.sources import (
    from_folder,
    from_numpy,
    from_sample,
    from_tfds,
    load_sample,
    make_dataset,
)

__all__ = [
    "DataError",
    "batch",
    "from_folder",
    "from_numpy",
    "from_sample",
    "from_tfds",
    "image_grid",
    "load_sample",
    "make_dataset",
    "save_png",
    "to_float_images",
]
