"""Exact toy densities: each integrates to one and matches the points its generator draws."""

import numpy as np
import pytest

from nfbook import toy_densities

NAMES = ["gaussian_mixture", "rings", "checkerboard", "pinwheel", "moons"]


def _grid(half_width, num):
    g = np.linspace(-half_width, half_width, num)
    xx, yy = np.meshgrid(g, g)
    return np.stack([xx.ravel(), yy.ravel()], axis=1), (g[1] - g[0]) ** 2


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one_and_its_entropy_matches_the_samples(name):
    # Cells of 0.05, the narrowest noise scale of these sets (the moons' and the rings'):
    # the grid sum of a density blurred by a Gaussian of that width is then exact to about
    # 1e-7, and the pinwheel's to 5e-6, far inside 2e-3 (a 401 x 401 grid, 4 times the
    # points and the time, moved no integral by more than 1e-7 and no entropy by 1e-5).
    points, cell = _grid(5.0, 201)
    log_p = toy_densities.log_prob(name, points)
    p = np.exp(log_p)
    assert abs(p.sum() * cell - 1.0) < 2e-3
    # Entropy on the grid against the Monte Carlo estimate over the generator's own points:
    # a density that is normalised but not the generator's would miss by far more.
    on_grid = -(p[p > 0] * log_p[p > 0]).sum() * cell
    estimate, standard_error = toy_densities.entropy(name, n=4000)
    assert abs(estimate - on_grid) < 4 * standard_error + 0.01


def test_pinwheel_density_changes_with_its_parameters():
    x = np.array([[1.0, 1.5], [-2.0, 0.5]])
    base = toy_densities.pinwheel_log_prob(x)
    assert not np.allclose(base, toy_densities.pinwheel_log_prob(x, rate=0.5))


def test_checkerboard_entropy_is_log_area():
    estimate, standard_error = toy_densities.entropy("checkerboard", n=100)
    assert estimate == pytest.approx(np.log(32.0)) and standard_error < 1e-12


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="`name` must be one of"):
        toy_densities.log_prob("spirals", [[0.0, 0.0]])
