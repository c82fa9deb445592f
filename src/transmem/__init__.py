"""transmem: unsupervised transfer learning between spatiotemporal predictive networks.

Frames are ``(batch, time, channels, height, width)`` float32 tensors in [0, 1].

>>> import transmem
>>> predictor = transmem.load("runs/digits3")          # doctest: +SKIP
>>> future = predictor.predict(frames[:, :10], horizon=10)  # doctest: +SKIP
"""

__version__ = "0.1.0"


def load(path, device="cpu"):
    """Load a trained predictor from a run folder, ``model.safetensors`` or checkpoint.

    Returns a :class:`transmem.predictor.Predictor` whose ``predict(frames, horizon)`` maps
    ``(B, T_in, C, H, W)`` to ``(B, horizon, C, H, W)``. Sources are never needed.
    """
    from transmem.predictor import load as _load

    return _load(path, device)


__all__ = ["__version__", "load"]
