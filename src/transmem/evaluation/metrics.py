"""Frame-wise verification metrics for video prediction, accumulated batch by batch.

Tensors follow the project convention ``(batch, time, channels, height, width)``
with intensities in ``[0, 1]``.  A *sequence* is one item of the batch; a *frame*
is one ``(C, H, W)`` slice of it.  The API mirrors pysteps' verification
modules (``init``, ``accum``, ``merge``, ``compute``): create an accumulator,
``update`` it with each batch, ``merge`` accumulators of disjoint batches (e.g. from
several processes), ``compute`` the scores at the end.  Only running sums are kept (in
float64), so the result does not depend on how the test set is split into batches.

Before scoring, predictions are clipped to ``[0, 1]``; the truth must already lie
in ``[0, 1]``.  For predicted frame ``t`` (``t = 1 .. T``), with ``N`` sequences,
``P = C * H * W`` values per frame, prediction ``x`` and truth ``y``:

``mse``
    Squared error **summed** over the pixels and channels of a frame, averaged
    over sequences: ``mse[t] = 1/N * sum_n sum_{c,h,w} (x - y)^2``.  This is the
    PredRNN / OpenSTL convention ("MSE per frame"); on Moving MNIST (64x64)
    values are typically 20-100.
``mae``
    Absolute error summed over a frame's pixels and channels, averaged over
    sequences: ``mae[t] = 1/N * sum_n sum_{c,h,w} |x - y|``.
``mse_pixel``
    Per-pixel mean squared error: ``mse_pixel[t] = mse[t] / P``.
``ssim``
    Structural similarity (Wang et al. 2004) of each frame, averaged over
    sequences.  The SSIM map is computed with torchmetrics'
    ``structural_similarity_index_measure`` (Gaussian window of size 11 and
    sigma 1.5, ``data_range=1.0``, ``k1=0.01``, ``k2=0.03``).  For a
    multi-channel frame it is the mean over channels.  The map is averaged over
    its *valid* interior, i.e. without the ``(window - 1) / 2`` pixel border (5 px)
    whose values depend on padding (``ssim_border="valid"``, default); transmem
    computes that interior itself with the same formula (:func:`ssim_valid_map`,
    equal to torchmetrics' to rounding and much faster in float64: see docs/metrics.md).  This is
    the reference definition (Wang et al.'s MATLAB code, scikit-image with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, and
    torchmetrics < 1.5).  torchmetrics >= 1.5 instead averages the whole map,
    borders included, computed on reflect-padded frames; ``ssim_border="reflect"``
    selects that.  Both are computed from torchmetrics' full SSIM map, so the
    result does not depend on the installed torchmetrics version.
    Frames smaller than 11 pixels in height or width use the largest odd window
    ``k <= min(H, W)`` with sigma ``1.5 * (k - 1) / 10`` (so ``k = 9, 7, 5, 3``
    use sigma ``1.2, 0.9, 0.6, 0.3``; torchmetrics derives the Gaussian window
    from sigma as ``2 * int(3.5 * sigma + 0.5) + 1``, which gives back ``k``,
    and so does scikit-image).  Frames smaller than 3x3 are rejected.
``psnr``
    Peak signal-to-noise ratio of each frame, ``10 * log10(1 / mse_pixel_n[t])``
    with the per-pixel MSE of *that* sequence's frame (peak value 1), averaged
    over sequences.  Each frame's PSNR is capped at ``PSNR_CAP_DB = 100`` dB, the
    value identical frames get instead of +inf, so the average stays finite.
``count``
    Number of sequences ``N`` scored.

Each metric is reported as ``{"per_frame": [T floats], "mean": float}`` where
``mean`` is the mean over the ``T`` frames.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "METRIC_NAMES",
    "PSNR_CAP_DB",
    "REPORTED_METRIC_NAMES",
    "SSIM_WINDOW",
    "SSIM_SIGMA",
    "FrameMetrics",
    "copy_last_frame_baseline",
    "ssim_window_for",
    "ssim_per_frame",
    "ssim_valid_map",
]

#: Names of the per-frame metrics returned by :meth:`FrameMetrics.compute`, in report order.
METRIC_NAMES: tuple[str, ...] = ("mse", "mae", "mse_pixel", "ssim", "psnr")

#: The metrics that result tables and the validation log show: :data:`METRIC_NAMES` without
#: ``mse_pixel``, which is ``mse`` divided by the number of values per frame.
REPORTED_METRIC_NAMES: tuple[str, ...] = tuple(name for name in METRIC_NAMES if name != "mse_pixel")

#: PSNR (dB) given to frames whose per-pixel MSE is 0 (and upper bound for all frames).
PSNR_CAP_DB: float = 100.0

#: Default SSIM Gaussian window size (pixels) and standard deviation (pixels).
SSIM_WINDOW: int = 11
SSIM_SIGMA: float = 1.5


def ssim_window_for(height: int, width: int) -> tuple[int, float]:
    """Gaussian SSIM window ``(size, sigma)`` in pixels for frames of ``height x width``.

    Returns ``(11, 1.5)`` when both sides are at least 11 pixels, otherwise the largest
    odd size ``k <= min(height, width)`` with sigma ``1.5 * (k - 1) / 10``.

    Raises:
        ValueError: if the frame is smaller than 3x3 pixels.
    """
    smallest_side = min(height, width)
    if smallest_side < 3:
        raise ValueError(f"SSIM needs frames of at least 3x3 pixels, got {height}x{width}")
    if smallest_side >= SSIM_WINDOW:
        return SSIM_WINDOW, SSIM_SIGMA
    size = smallest_side if smallest_side % 2 == 1 else smallest_side - 1
    sigma = SSIM_SIGMA * (size - 1) / (SSIM_WINDOW - 1)
    # torchmetrics ignores ``kernel_size`` for Gaussian windows and derives the size from sigma.
    assert 2 * int(3.5 * sigma + 0.5) + 1 == size
    return size, sigma


def ssim_per_frame(pred_frames: Tensor, truth_frames: Tensor, border: Literal["valid", "reflect"] = "valid") -> Tensor:
    """SSIM of each frame pair, with data range 1 (see the module docstring).

    Args:
        pred_frames: ``(N, C, H, W)`` frames in ``[0, 1]``.
        truth_frames: ``(N, C, H, W)`` frames in ``[0, 1]``, same dtype and device.
        border: ``"valid"`` averages the SSIM map without its ``(window - 1) / 2``
            pixel border (reference definition); ``"reflect"`` averages the whole
            map computed on reflect-padded frames (torchmetrics >= 1.5 default).

    Returns:
        ``(N,)`` SSIM values (mean over channels and pixels of the SSIM map).
    """
    if border not in ("valid", "reflect"):
        raise ValueError(f"border must be 'valid' or 'reflect', got {border!r}")
    height, width = pred_frames.shape[-2:]
    window, sigma = ssim_window_for(height, width)
    if border == "valid":
        return ssim_valid_map(pred_frames, truth_frames, window, sigma).flatten(start_dim=1).mean(dim=1)
    # imported here: torchmetrics imports matplotlib, which only pictures need
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, ssim_map = structural_similarity_index_measure(
        pred_frames,
        truth_frames,
        gaussian_kernel=True,
        sigma=sigma,
        kernel_size=window,
        reduction="none",
        data_range=1.0,
        return_full_image=True,
    )  # ssim_map: (N, C, H, W), computed on reflect-padded frames
    return ssim_map.flatten(start_dim=1).mean(dim=1)


def _gaussian_band(size: int, window: int, sigma: float, like: Tensor) -> Tensor:
    """``(size - window + 1, size)`` matrix whose row ``i`` holds the normalised 1-D Gaussian
    window at columns ``i .. i + window - 1``: ``band @ x`` filters the columns of ``x``
    without padding."""
    offsets = torch.arange(window, dtype=like.dtype, device=like.device) - (window - 1) / 2
    gauss = torch.exp(-((offsets / sigma) ** 2) / 2)
    gauss = gauss / gauss.sum()
    rows = size - window + 1
    band = torch.zeros(rows, size, dtype=like.dtype, device=like.device)
    for i in range(rows):
        band[i, i : i + window] = gauss
    return band


def ssim_valid_map(pred_frames: Tensor, truth_frames: Tensor, window: int, sigma: float) -> Tensor:
    """The SSIM map of torchmetrics' ``structural_similarity_index_measure`` (Gaussian window,
    data range 1, k1 0.01, k2 0.03, same clamps) on its valid interior only:
    ``(N, C, H - window + 1, W - window + 1)`` from ``(N, C, H, W)`` frames.

    The interior does not depend on padding, so no padding is done, and the Gaussian window,
    the outer product of two 1-D windows, is applied as two matrix products (one per image
    axis) instead of a 2-D convolution: the same sums in another order (equal to rounding,
    tested against torchmetrics): 1,000 64x64 float64 frames took 0.8 s instead of 129 s on one
    CPU thread (docs/metrics.md).
    """
    height, width = pred_frames.shape[-2:]
    rows = _gaussian_band(height, window, sigma, pred_frames)  # (H', H)
    cols = _gaussian_band(width, window, sigma, pred_frames).T  # (W, W')
    x, y = pred_frames, truth_frames
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = (rows @ image @ cols for image in (x, y, x * x, y * y, x * y))
    c1, c2 = 0.01**2, 0.03**2
    mu_xx, mu_yy, mu_xy = mu_x.pow(2), mu_y.pow(2), mu_x * mu_y
    var_x = torch.clamp(mean_xx - mu_xx, min=0.0)
    var_y = torch.clamp(mean_yy - mu_yy, min=0.0)
    cov = mean_xy - mu_xy
    return ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))


def copy_last_frame_baseline(inputs: Tensor, horizon: int) -> Tensor:
    """Naive forecast that repeats the last observed frame.

    Args:
        inputs: ``(B, T_in, C, H, W)`` observed frames, ``T_in >= 1``.
        horizon: number of frames to predict, ``>= 1``.

    Returns:
        ``(B, horizon, C, H, W)`` tensor (a new, contiguous tensor on the inputs' device).
    """
    if inputs.ndim != 5:
        raise ValueError(f"inputs must be (B, T, C, H, W), got shape {tuple(inputs.shape)}")
    if inputs.shape[1] < 1:
        raise ValueError("inputs must contain at least one frame")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return inputs[:, -1:].expand(-1, horizon, -1, -1, -1).clone()


class FrameMetrics:
    """Accumulates frame-wise video-prediction metrics over batches (see module docstring).

    Usage::

        metrics = FrameMetrics(horizon=10)
        for inputs, truth in loader:
            metrics.update(model(inputs), truth)
        scores = metrics.compute()   # {"mse": {"per_frame": [...], "mean": ...}, ..., "count": N}

    The running sums live on the device of the first batch, in ``accumulate_dtype``
    (float64).  Scores are computed in ``compute_dtype`` (float64 by default, so
    results do not depend on batch composition; float32 is faster for large test sets).

    Args:
        horizon: number of predicted frames ``T`` per sequence.
        compute_dtype: floating dtype used to compute the per-frame scores.
        ssim_border: ``"valid"`` (reference SSIM, default) or ``"reflect"``
            (torchmetrics >= 1.5 averaging); see :func:`ssim_per_frame`.
    """

    accumulate_dtype = torch.float64

    def __init__(
        self,
        horizon: int,
        compute_dtype: torch.dtype = torch.float64,
        ssim_border: Literal["valid", "reflect"] = "valid",
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not compute_dtype.is_floating_point:
            raise ValueError(f"compute_dtype must be a floating dtype, got {compute_dtype}")
        if ssim_border not in ("valid", "reflect"):
            raise ValueError(f"ssim_border must be 'valid' or 'reflect', got {ssim_border!r}")
        self.horizon = horizon
        self.compute_dtype = compute_dtype
        self.ssim_border = ssim_border
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._sums: dict[str, Tensor] | None = None  # metric name -> (T,) sum over sequences
        self._count = 0
        self._frame_shape: tuple[int, int, int] | None = None

    @property
    def count(self) -> int:
        """Number of sequences accumulated so far."""
        return self._count

    def _check(self, pred: Tensor, truth: Tensor) -> None:
        if pred.ndim != 5 or truth.ndim != 5:
            raise ValueError(
                "pred and truth must be (batch, time, channels, height, width) tensors, "
                f"got shapes {tuple(pred.shape)} and {tuple(truth.shape)}"
            )
        if pred.shape != truth.shape:
            raise ValueError(f"pred and truth shapes differ: {tuple(pred.shape)} vs {tuple(truth.shape)}")
        if pred.shape[1] != self.horizon:
            raise ValueError(
                f"expected {self.horizon} predicted frames (horizon), got {pred.shape[1]} in shape {tuple(pred.shape)}"
            )
        frame_shape = tuple(pred.shape[2:])
        if self._frame_shape is not None and frame_shape != self._frame_shape:
            raise ValueError(f"frame shape (C, H, W) changed between batches: {self._frame_shape} -> {frame_shape}")
        if pred.shape[0] == 0:
            raise ValueError("empty batch")
        ssim_window_for(pred.shape[-2], pred.shape[-1])  # rejects frames smaller than 3x3
        if not pred.is_floating_point() or not truth.is_floating_point():
            raise ValueError(f"pred and truth must be floating point, got {pred.dtype} and {truth.dtype}")
        # The checks below synchronise with the device once per batch; unavoidable for validation.
        if bool(torch.isnan(pred).any()):
            raise ValueError("pred contains NaN values")
        truth_min, truth_max = torch.aminmax(truth)
        if not (0.0 <= float(truth_min) and float(truth_max) <= 1.0):  # also false for NaN
            raise ValueError(f"truth must lie within [0, 1], got values in [{float(truth_min)}, {float(truth_max)}]")

    @torch.no_grad()
    def update(self, pred: Tensor, truth: Tensor) -> None:
        """Add one batch of predictions.

        Args:
            pred: ``(B, T, C, H, W)`` predicted frames; clipped to ``[0, 1]`` before scoring.
            truth: ``(B, T, C, H, W)`` ground-truth frames in ``[0, 1]``.

        Raises:
            ValueError: on shape mismatch (``T`` must equal ``horizon``), NaN in ``pred``,
                or ``truth`` outside ``[0, 1]``.
        """
        self._check(pred, truth)
        batch, steps, channels, height, width = pred.shape
        pred = pred.detach().to(self.compute_dtype).clamp(0.0, 1.0)
        truth = truth.detach().to(device=pred.device, dtype=self.compute_dtype)

        error = pred - truth
        squared_sum = error.square().sum(dim=(2, 3, 4))  # (B, T)
        absolute_sum = error.abs().sum(dim=(2, 3, 4))  # (B, T)
        mse_pixel = squared_sum / (channels * height * width)  # (B, T)
        # 10 log10(1 / mse); mse == 0 gives +inf, which the cap turns into PSNR_CAP_DB.
        psnr = (-10.0 * torch.log10(mse_pixel)).clamp(max=PSNR_CAP_DB)
        ssim = ssim_per_frame(
            pred.reshape(batch * steps, channels, height, width),
            truth.reshape(batch * steps, channels, height, width),
            border=self.ssim_border,
        ).reshape(batch, steps)

        per_sequence = {
            "mse": squared_sum,
            "mae": absolute_sum,
            "mse_pixel": mse_pixel,
            "ssim": ssim,
            "psnr": psnr,
        }
        if self._sums is None:
            self._sums = {name: torch.zeros(steps, dtype=self.accumulate_dtype, device=pred.device) for name in METRIC_NAMES}
            self._frame_shape = (channels, height, width)
        for name, values in per_sequence.items():
            accumulator = self._sums[name]
            accumulator += values.sum(dim=0).to(device=accumulator.device, dtype=accumulator.dtype)
        self._count += batch

    def merge(self, other: FrameMetrics) -> FrameMetrics:
        """A new accumulator holding the batches of both, as if one had been updated with the
        batches of ``self``, then those of ``other`` (pysteps' ``*_merge``); neither is changed.

        The sums live on ``self``'s device (``other``'s when ``self`` holds no batch).

        Raises:
            ValueError: if the two differ in horizon, compute dtype, SSIM border or frame shape.
        """
        settings = (self.horizon, self.compute_dtype, self.ssim_border)
        other_settings = (other.horizon, other.compute_dtype, other.ssim_border)
        if settings != other_settings:
            raise ValueError(f"cannot merge FrameMetrics of (horizon, dtype, border) {settings} and {other_settings}")
        if None not in (self._frame_shape, other._frame_shape) and self._frame_shape != other._frame_shape:
            raise ValueError(f"cannot merge frames of shape (C, H, W) {self._frame_shape} and {other._frame_shape}")
        merged = FrameMetrics(*settings)
        merged._count = self._count + other._count
        merged._frame_shape = self._frame_shape or other._frame_shape
        if self._sums is not None and other._sums is not None:
            merged._sums = {name: total + other._sums[name].to(total.device) for name, total in self._sums.items()}
        elif self._sums is not None or other._sums is not None:
            merged._sums = {name: total.clone() for name, total in (self._sums or other._sums).items()}
        return merged

    def compute(self) -> dict:
        """Scores over all sequences seen so far.

        Returns:
            ``{name: {"per_frame": [T floats], "mean": float} for name in METRIC_NAMES}``
            plus ``"count": int`` (number of sequences).

        Raises:
            RuntimeError: if no batch has been added.
        """
        if self._sums is None or self._count == 0:
            raise RuntimeError("FrameMetrics.compute() called before any update()")
        result: dict = {}
        for name in METRIC_NAMES:
            per_frame = (self._sums[name] / self._count).cpu().tolist()
            result[name] = {"per_frame": per_frame, "mean": math.fsum(per_frame) / len(per_frame)}
        result["count"] = self._count
        return result
