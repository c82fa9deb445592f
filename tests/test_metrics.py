"""Tests of transmem.evaluation.metrics and .gate_means: hand-computed values, SSIM reference,
accumulation and merging."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchmetrics
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from transmem.evaluation.gate_means import TransferGateMeans
from transmem.evaluation.metrics import (
    METRIC_NAMES,
    PSNR_CAP_DB,
    FrameMetrics,
    copy_last_frame_baseline,
    ssim_per_frame,
    ssim_valid_map,
    ssim_window_for,
)

C1 = (0.01 * 1.0) ** 2  # SSIM stabilisers for data range 1
C2 = (0.03 * 1.0) ** 2


def constant_video(values_per_frame: list[float], batch: int = 2, channels: int = 1, size: int = 16):
    """(batch, T, channels, size, size) video whose frame t is filled with values_per_frame[t]."""
    values = torch.tensor(values_per_frame, dtype=torch.float32)
    return values.view(1, -1, 1, 1, 1).expand(batch, -1, channels, size, size).clone()


def scores(pred: torch.Tensor, truth: torch.Tensor) -> dict:
    metrics = FrameMetrics(horizon=pred.shape[1])
    metrics.update(pred, truth)
    return metrics.compute()


def test_constant_frames_match_hand_computed_values():
    size, channels = 16, 3
    pixels = channels * size * size
    pred_values, truth_values = [0.7, 0.5, 0.0, 0.25], [0.2, 0.5, 0.1, 1.0]
    result = scores(
        constant_video(pred_values, batch=3, channels=channels, size=size),
        constant_video(truth_values, batch=3, channels=channels, size=size),
    )
    for t, (x, y) in enumerate(zip(pred_values, truth_values)):
        d = abs(x - y)
        # float32 inputs: 0.7 etc. are not exact, hence the relative tolerance
        assert result["mse"]["per_frame"][t] == pytest.approx(pixels * d * d, rel=1e-6, abs=1e-9)
        assert result["mae"]["per_frame"][t] == pytest.approx(pixels * d, rel=1e-6, abs=1e-9)
        assert result["mse_pixel"]["per_frame"][t] == pytest.approx(d * d, rel=1e-6, abs=1e-12)
        expected_psnr = PSNR_CAP_DB if d == 0 else 10 * math.log10(1 / (d * d))
        assert result["psnr"]["per_frame"][t] == pytest.approx(expected_psnr, rel=1e-6)
        # constant frames: variances and covariance vanish, only the luminance term remains
        expected_ssim = (2 * x * y + C1) / (x * x + y * y + C1)
        assert result["ssim"]["per_frame"][t] == pytest.approx(expected_ssim, rel=1e-5)
    assert result["count"] == 3
    for name in METRIC_NAMES:
        per_frame = result[name]["per_frame"]
        assert len(per_frame) == 4
        assert result[name]["mean"] == pytest.approx(sum(per_frame) / 4, rel=1e-12)


def test_mse_is_summed_over_frame_and_averaged_over_sequences():
    truth = torch.zeros(2, 1, 1, 4, 4)
    pred = torch.zeros(2, 1, 1, 4, 4)
    pred[0, 0, 0, 0, 0] = 0.5  # sequence 0: one pixel off by 0.5
    pred[1] = 0.25  # sequence 1: all 16 pixels off by 0.25
    result = scores(pred, truth)
    assert result["mse"]["mean"] == pytest.approx((0.25 + 16 * 0.0625) / 2)
    assert result["mae"]["mean"] == pytest.approx((0.5 + 16 * 0.25) / 2)
    assert result["mse_pixel"]["mean"] == pytest.approx((0.25 / 16 + 0.0625) / 2)
    # PSNR is averaged over sequences, not computed from the averaged MSE
    expected_psnr = (10 * math.log10(16 / 0.25) + 10 * math.log10(1 / 0.0625)) / 2
    assert result["psnr"]["mean"] == pytest.approx(expected_psnr)


def test_identical_frames_have_capped_psnr_and_unit_ssim():
    video = torch.rand(2, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    result = scores(video, video.clone())
    assert result["mse"]["per_frame"] == [0.0, 0.0, 0.0]
    assert result["psnr"]["per_frame"] == [PSNR_CAP_DB] * 3
    assert result["ssim"]["per_frame"] == pytest.approx([1.0] * 3, abs=1e-12)


def test_predictions_are_clipped_before_scoring():
    truth = constant_video([1.0, 0.0, 0.5])
    pred = constant_video([1.5, -0.3, 2.0])
    result = scores(pred, truth)
    assert result["mse"]["per_frame"][:2] == [0.0, 0.0]
    assert result["mse_pixel"]["per_frame"][2] == pytest.approx(0.25)
    assert result["psnr"]["per_frame"][:2] == [PSNR_CAP_DB] * 2


def test_infinite_predictions_are_clipped():
    truth = constant_video([1.0, 0.0])
    pred = constant_video([math.inf, -math.inf])
    assert scores(pred, truth)["mse"]["per_frame"] == [0.0, 0.0]


@pytest.mark.parametrize("split", [1, 2, 5])
def test_batch_splitting_does_not_change_results(split):
    generator = torch.Generator().manual_seed(1)
    truth = torch.rand(6, 3, 2, 16, 16, generator=generator)
    pred = (truth + 0.2 * torch.randn(6, 3, 2, 16, 16, generator=generator)).float()
    whole = scores(pred, truth)
    pieces = FrameMetrics(horizon=3)
    pieces.update(pred[:split], truth[:split])
    pieces.update(pred[split:], truth[split:])
    parts = pieces.compute()
    assert parts["count"] == whole["count"] == 6
    for name in METRIC_NAMES:
        for got, expected in zip(parts[name]["per_frame"], whole[name]["per_frame"]):
            assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), name
        assert math.isclose(parts[name]["mean"], whole[name]["mean"], rel_tol=1e-9, abs_tol=1e-12)


def random_batches(sizes: list[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(pred, truth)`` batches of ``(size, 3, 2, 16, 16)`` float32, truth in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        truth = torch.rand(size, 3, 2, 16, 16, generator=generator)
        batches.append((truth + 0.2 * torch.randn(size, 3, 2, 16, 16, generator=generator), truth))
    return batches


def accumulated(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> FrameMetrics:
    metrics = FrameMetrics(horizon=3)
    for pred, truth in batches:
        metrics.update(pred, truth)
    return metrics


def test_merge_equals_one_accumulator_over_all_batches():
    batches = random_batches([2, 3, 1], seed=7)
    left, right = accumulated(batches[:2]), accumulated(batches[2:])
    merged = left.merge(right)
    assert merged.compute() == accumulated(batches).compute()  # exactly: the same sums in the same order
    assert (left.count, right.count, merged.count) == (5, 1, 6)  # neither part changed
    concatenated = accumulated([(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))]).compute()
    for name in METRIC_NAMES:
        assert merged.compute()[name]["per_frame"] == pytest.approx(concatenated[name]["per_frame"], rel=1e-12, abs=1e-12)
    assert FrameMetrics(horizon=3).merge(right).compute() == right.compute()
    assert right.merge(FrameMetrics(horizon=3)).compute() == right.compute()
    with pytest.raises(ValueError, match="horizon"):
        left.merge(FrameMetrics(horizon=2))
    other_size = FrameMetrics(horizon=3)
    other_size.update(torch.rand(1, 3, 2, 8, 8), torch.rand(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        left.merge(other_size)


def gate_batches(sizes: list[int], seed: int) -> list[dict[int, torch.Tensor]]:
    """Rollout gate means of two TMU layers: layer -> ``(size, 5 steps, 2 sources)`` in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return [{layer: torch.rand(size, 5, 2, generator=generator) for layer in (0, 2)} for size in sizes]


def gates_accumulated(batches: list[dict[int, torch.Tensor]]) -> TransferGateMeans:
    gates = TransferGateMeans()
    for batch in batches:
        gates.update(batch)
    return gates


def test_gate_means_merge_equals_one_accumulator_over_all_batches():
    batches = gate_batches([2, 3, 1], seed=8)
    left, right = gates_accumulated(batches[:2]), gates_accumulated(batches[2:])
    merged = left.merge(right)
    whole = gates_accumulated(batches)
    assert merged.compute() == whole.compute() and merged.count == whole.count == 6
    assert (left.count, right.count) == (5, 1)
    concatenated = gates_accumulated([{layer: torch.cat([b[layer] for b in batches]) for layer in (0, 2)}]).compute()
    assert list(merged.compute()) == ["0", "2"]
    for layer, per_source in merged.compute().items():
        assert len(per_source) == 2 and len(per_source[0]) == 5  # [[mean per step] per source]
        # each batch is summed in the gates' float32: other batches, other rounding
        assert np.allclose(per_source, concatenated[layer], rtol=1e-6, atol=0)
    expected = torch.cat([b[0] for b in batches]).double().mean(dim=0).T
    assert np.allclose(merged.compute()["0"], expected.numpy(), rtol=1e-6, atol=0)
    assert TransferGateMeans().merge(right).compute() == right.compute()
    with pytest.raises(ValueError, match="layers"):
        left.merge(gates_accumulated([{1: torch.rand(1, 5, 2)}]))


def test_gate_means_of_a_model_without_gates_are_empty():
    gates = TransferGateMeans()
    gates.update({})
    assert gates.compute() == {} and gates.count == 0
    assert gates.merge(TransferGateMeans()).compute() == {}


def test_importing_evaluation_does_not_import_matplotlib():
    """matplotlib (slow to import) is loaded only by the modules that draw a picture."""
    code = "import transmem, transmem.evaluation, transmem.evaluation.metrics, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_reset_forgets_batches():
    metrics = FrameMetrics(horizon=1)
    metrics.update(constant_video([0.0]), constant_video([1.0]))
    metrics.reset()
    metrics.update(constant_video([0.5]), constant_video([0.5]))
    assert metrics.compute()["mse"]["mean"] == 0.0
    assert metrics.count == 2


def test_float32_compute_dtype_gives_close_results():
    generator = torch.Generator().manual_seed(2)
    truth = torch.rand(2, 2, 1, 16, 16, generator=generator)
    pred = torch.rand(2, 2, 1, 16, 16, generator=generator)
    precise = scores(pred, truth)
    fast = FrameMetrics(horizon=2, compute_dtype=torch.float32)
    fast.update(pred, truth)
    for name in METRIC_NAMES:
        assert fast.compute()[name]["mean"] == pytest.approx(precise[name]["mean"], rel=1e-5, abs=1e-5)


def _correlated_frames(seed: int, count: int, channels: int, size: int):
    generator = torch.Generator().manual_seed(seed)
    truth = torch.rand(count, channels, size, size, generator=generator, dtype=torch.float64)
    noise = 0.15 * torch.randn(count, channels, size, size, generator=generator, dtype=torch.float64)
    pred = (0.8 * truth + 0.1 + noise).clamp(0, 1)
    return pred, truth


@pytest.mark.parametrize(("channels", "size"), [(1, 32), (3, 32), (1, 8)])
def test_ssim_matches_scikit_image(channels, size):
    # Both libraries use a Gaussian window truncated at 3.5 sigma (11 px for sigma 1.5,
    # 7 px for the 8x8 frames' sigma 0.9) and average the SSIM map over the interior
    # only, cropping (window - 1) / 2 border pixels.  Their different padding
    # (torch "reflect" vs scipy "reflect" = symmetric) therefore only touches cropped
    # pixels, and with float64 inputs the two agree to rounding error.
    pred, truth = _correlated_frames(seed=channels + size, count=4, channels=channels, size=size)
    ours = ssim_per_frame(pred, truth)
    _, sigma = ssim_window_for(size, size)
    for index in range(pred.shape[0]):
        reference = structural_similarity(
            pred[index].numpy(),
            truth[index].numpy(),
            gaussian_weights=True,
            sigma=sigma,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        assert float(ours[index]) == pytest.approx(reference, abs=1e-9)
        assert 0.0 < reference < 1.0  # a meaningful comparison, not a trivial 1 or 0


@pytest.mark.parametrize(("channels", "height", "width"), [(1, 64, 64), (3, 16, 12), (2, 7, 9), (1, 3, 5)])
def test_ssim_valid_map_is_torchmetrics_map_interior(channels, height, width):
    # transmem's own separable, unpadded SSIM map against torchmetrics' 2-D convolution on
    # reflect-padded frames, cropped: the same values to rounding, for every window size.
    pred, truth = _correlated_frames(seed=height * width, count=3, channels=channels, size=max(height, width))
    pred, truth = pred[..., :height, :width], truth[..., :height, :width]
    pred[0] = truth[0]  # identical frames: SSIM 1 everywhere
    window, sigma = ssim_window_for(height, width)
    _, full_map = structural_similarity_index_measure(
        pred,
        truth,
        gaussian_kernel=True,
        sigma=sigma,
        kernel_size=window,
        reduction="none",
        data_range=1.0,
        return_full_image=True,
    )
    margin = window // 2
    interior = full_map[..., margin : height - margin, margin : width - margin]
    ours = ssim_valid_map(pred, truth, window, sigma)
    assert ours.shape == interior.shape == (3, channels, height - window + 1, width - window + 1)
    assert torch.allclose(ours, interior, rtol=0, atol=1e-12)
    assert torch.allclose(ours[0], torch.ones_like(ours[0]), rtol=0, atol=1e-12)


def test_ssim_of_float32_frames_is_close_to_scikit_image():
    pred, truth = _correlated_frames(seed=3, count=3, channels=1, size=32)
    ours = ssim_per_frame(pred.float(), truth.float())
    for index in range(3):
        reference = structural_similarity(
            pred[index, 0].numpy(),
            truth[index, 0].numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(ours[index]) == pytest.approx(reference, abs=1e-5)


def test_reflect_border_is_torchmetrics_whole_map_average():
    # torchmetrics >= 1.5 averages the whole SSIM map, borders computed on
    # reflect-padded frames; older versions cropped the border like scikit-image.
    if tuple(int(part) for part in torchmetrics.__version__.split(".")[:2]) < (1, 5):
        pytest.skip("torchmetrics < 1.5 crops the border by default")
    pred, truth = _correlated_frames(seed=7, count=3, channels=3, size=16)
    whole_map = ssim_per_frame(pred, truth, border="reflect")
    default = structural_similarity_index_measure(pred, truth, data_range=1.0, reduction="none")
    assert torch.allclose(whole_map, default, rtol=0, atol=1e-12)
    # the border pixels make a visible difference on small frames
    assert not torch.allclose(whole_map, ssim_per_frame(pred, truth), rtol=0, atol=1e-4)
    metrics = FrameMetrics(horizon=1, ssim_border="reflect")
    metrics.update(pred.unsqueeze(1), truth.unsqueeze(1))
    assert metrics.compute()["ssim"]["mean"] == pytest.approx(float(default.mean()), rel=1e-12)
    with pytest.raises(ValueError):
        FrameMetrics(horizon=1, ssim_border="same")


def test_ssim_window_shrinks_for_small_frames():
    assert ssim_window_for(16, 16) == (11, 1.5)
    assert ssim_window_for(64, 11) == (11, 1.5)
    assert ssim_window_for(10, 32) == (9, pytest.approx(1.2))
    assert ssim_window_for(8, 8) == (7, pytest.approx(0.9))
    assert ssim_window_for(3, 5) == (3, pytest.approx(0.3))
    with pytest.raises(ValueError, match="3x3"):
        ssim_window_for(2, 16)
    video = torch.rand(2, 2, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    assert scores(video, video)["ssim"]["mean"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("pred_shape", "truth_shape", "message"),
    [
        ((2, 4, 1, 16, 16), (2, 4, 1, 16, 16), "horizon"),
        ((2, 3, 1, 16, 16), (2, 3, 1, 16, 8), "differ"),
        ((3, 1, 16, 16), (3, 1, 16, 16), "batch, time"),
        ((0, 3, 1, 16, 16), (0, 3, 1, 16, 16), "empty"),
    ],
)
def test_shape_errors(pred_shape, truth_shape, message):
    with pytest.raises(ValueError, match=message):
        FrameMetrics(horizon=3).update(torch.zeros(pred_shape), torch.zeros(truth_shape))


def test_frame_shape_must_not_change_between_batches():
    metrics = FrameMetrics(horizon=1)
    metrics.update(torch.zeros(1, 1, 1, 16, 16), torch.zeros(1, 1, 1, 16, 16))
    with pytest.raises(ValueError, match="changed"):
        metrics.update(torch.zeros(1, 1, 3, 16, 16), torch.zeros(1, 1, 3, 16, 16))


def test_nan_prediction_and_bad_truth_are_rejected():
    metrics = FrameMetrics(horizon=1)
    pred, truth = torch.zeros(1, 1, 1, 16, 16), torch.zeros(1, 1, 1, 16, 16)
    pred[0, 0, 0, 3, 3] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.update(pred, truth)
    for bad_value in (1.5, -0.1, math.nan):
        bad_truth = truth.clone()
        bad_truth[0, 0, 0, 0, 0] = bad_value
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            metrics.update(torch.zeros_like(truth), bad_truth)
    assert metrics.count == 0


def test_invalid_construction_and_empty_compute():
    with pytest.raises(ValueError):
        FrameMetrics(horizon=0)
    with pytest.raises(RuntimeError):
        FrameMetrics(horizon=2).compute()


def test_copy_last_frame_baseline():
    inputs = torch.rand(2, 5, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    baseline = copy_last_frame_baseline(inputs, horizon=4)
    assert baseline.shape == (2, 4, 3, 8, 8)
    assert torch.equal(baseline, inputs[:, -1:].repeat(1, 4, 1, 1, 1))
    baseline[0, 0] = 0  # a new tensor, not a view of the inputs
    assert torch.equal(inputs[0, -1], copy_last_frame_baseline(inputs, 1)[0, 0])
    with pytest.raises(ValueError):
        copy_last_frame_baseline(inputs, horizon=0)
    with pytest.raises(ValueError):
        copy_last_frame_baseline(inputs[0], horizon=2)


def test_baseline_scores_static_video_perfectly():
    inputs = constant_video([0.3, 0.3], batch=2)
    truth = constant_video([0.3, 0.3, 0.3], batch=2)
    result = scores(copy_last_frame_baseline(inputs, 3), truth)
    assert result["mse"]["mean"] == 0.0
    assert result["psnr"]["mean"] == PSNR_CAP_DB


def test_update_does_not_track_gradients():
    leaf = torch.rand(1, 2, 1, 16, 16, requires_grad=True)
    pred = leaf * 1.0  # part of a graph, as a model's output is
    metrics = FrameMetrics(horizon=2)
    metrics.update(pred, torch.rand(1, 2, 1, 16, 16))
    metrics.update(pred, torch.rand(1, 2, 1, 16, 16))
    for name, total in metrics._sums.items():  # no autograd graph kept across batches
        assert not total.requires_grad and total.grad_fn is None, name
    assert isinstance(metrics.compute()["mse"]["mean"], float)
    assert leaf.grad is None


@pytest.mark.cuda
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(6)
    truth = torch.rand(2, 2, 1, 16, 16, generator=generator)
    pred = torch.rand(2, 2, 1, 16, 16, generator=generator)
    on_cpu = scores(pred, truth)
    on_gpu = scores(pred.cuda(), truth.cuda())
    for name in METRIC_NAMES:
        assert on_gpu[name]["per_frame"] == pytest.approx(on_cpu[name]["per_frame"], rel=1e-9)
    assert np.isfinite(on_gpu["psnr"]["mean"])
