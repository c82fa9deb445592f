"""Validation curves over training: averaging over seeds and the plot."""

import pytest
from PIL import Image

from transmem.evaluation.training_curves import log_ticks, mean_curve, plot_validation_curves


def test_mean_curve_is_the_mean_and_sample_std_per_iteration():
    iterations, mean, std = mean_curve([[(250, 100.0), (500, 80.0)], [(250, 120.0), (500, 60.0)], [(250, 110.0), (500, 70.0)]])
    assert iterations == [250, 500]
    assert mean == pytest.approx([110.0, 70.0])
    assert std == pytest.approx([10.0, 10.0])  # sample std (ddof 1), as in the results tables


def test_one_seed_has_zero_spread_and_an_unfinished_seed_is_cut_to_the_shared_iterations():
    assert mean_curve([[(10, 5.0), (20, 4.0)]]) == ([10, 20], [5.0, 4.0], [0.0, 0.0])
    iterations, mean, _ = mean_curve([[(10, 5.0), (20, 4.0)], [(10, 7.0)], []])
    assert iterations == [10] and mean == [6.0]


def test_only_the_iterations_every_run_validated_are_kept():
    # seed 1 lost its row at 20 (killed between checkpoint and validation, then resumed)
    iterations, mean, std = mean_curve([[(10, 5.0), (20, 4.0), (30, 3.0)], [(10, 7.0), (30, 5.0)]])
    assert iterations == [10, 30] and mean == [6.0, 4.0] and std == pytest.approx([2**0.5, 2**0.5])
    with pytest.raises(ValueError, match="share no validated iteration"):
        mean_curve([[(10, 5.0)], [(20, 4.0)]])
    with pytest.raises(ValueError, match="no validation curve"):
        mean_curve([[], []])


def test_plot_writes_a_png_and_checks_its_input(tmp_path):
    path = tmp_path / "plots" / "validation.png"
    plot_validation_curves(
        path, {"scratch": ([250, 500], [380.0, 200.0], [0.0, 0.0]), "tmu": ([250, 500], [220.0, 190.0], [5.0, 3.0])}
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
    with pytest.raises(ValueError, match="one length"):
        plot_validation_curves(tmp_path / "bad.png", {"tmu": ([250, 500], [1.0], [0.0])})
    with pytest.raises(ValueError, match="no curve"):
        plot_validation_curves(tmp_path / "bad.png", {})
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("low, high", [(130.0, 520.0), (185.0, 205.0), (0.5, 3000.0), (150.0, 410.0), (31.0, 51.0)])
def test_log_ticks_are_round_values_inside_the_range(low, high):
    ticks = log_ticks(low, high)
    assert 4 <= len(ticks) <= 8 and ticks == sorted(ticks)
    assert all(low <= t <= high for t in ticks)
    assert log_ticks(130.0, 520.0) == [150.0, 200.0, 300.0, 400.0, 500.0]
