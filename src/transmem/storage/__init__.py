"""Storage: what transmem writes to disk and reads back, below training and evaluation.

* :mod:`.files` — atomic writes (temporary file, fsync, rename), SHA-256 of a file, removal
  of the temporaries a kill left;
* :mod:`.locks` — one writer per run folder or memory bank (``flock``);
* :mod:`.checkpoints` — verified checkpoints and their manifest;
* :mod:`.model_file` — ``model.safetensors`` (weights and architecture) and loading a model;
* :mod:`.run_folder` — :class:`~.run_folder.RunFolder`, the one place that names a run
  folder's files.
"""
