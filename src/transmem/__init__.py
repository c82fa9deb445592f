"""transmem: unsupervised transfer learning between spatiotemporal predictive networks.

Frames are ``(batch, time, channels, height, width)`` float32 tensors in [0, 1].

>>> import transmem
>>> config = transmem.load_config("configs/digits/scratch.toml", ["train.iterations=100"])  # doctest: +SKIP
>>> transmem.train(config, "runs/digits3")  # doctest: +SKIP
>>> predictor = transmem.load("runs/digits3")  # doctest: +SKIP
>>> future = predictor.predict(frames[:, :10], horizon=10)  # doctest: +SKIP

The package's top: these functions import their layer when called, so ``import transmem``
stays cheap and the layers below never import it.
"""

from transmem.version import __version__


def load_config(path, overrides=None):
    """The validated :class:`~transmem.config.RunConfig` of the TOML file at ``path``, with
    ``overrides`` (``"section.key=value"`` strings, as ``--set`` takes them) applied."""
    from transmem.config import load_config as _load_config

    return _load_config(path, overrides)


def train(config, run_dir, **options):
    """Train the run ``config`` describes in the folder ``run_dir``, resuming if it holds one;
    see :func:`transmem.run.lifecycle.train` for ``options`` and the result."""
    from transmem.run.lifecycle import train as _train

    return _train(config, run_dir, **options)


def load(path, device="cpu"):
    """Load a trained predictor from a run folder, ``model.safetensors`` or checkpoint.

    Returns a :class:`transmem.predictor.Predictor` whose ``predict(frames, horizon)`` maps
    ``(B, T_in, C, H, W)`` to ``(B, horizon, C, H, W)``. Sources are never needed.
    """
    from transmem.predictor import load as _load

    return _load(path, device)


__all__ = ["__version__", "load", "load_config", "train"]
