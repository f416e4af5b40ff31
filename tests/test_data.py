import numpy as np
import pytest
from sklearn.datasets import make_moons

from nfbook import data

GENERATORS = {
    "moons": data.moons,
    "text": lambda n, seed: data.text("NF", n=n, seed=seed),
    "rings": data.rings,
    "checkerboard": data.checkerboard,
    "pinwheel": data.pinwheel,
    "gaussian_mixture": data.gaussian_mixture,
}


@pytest.mark.parametrize("name", GENERATORS)
def test_shape_dtype_range_and_seeding(name):
    make = GENERATORS[name]
    x = make(3001, seed=0)
    assert x.shape == (3001, 2) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert np.abs(x).max() < 5.0 and np.quantile(np.abs(x), 0.999) <= 4.0
    np.testing.assert_array_equal(make(3001, seed=0), x)
    assert not np.allclose(make(3001, seed=1), x)
    assert make(1, seed=0).shape == (1, 2)


def test_moons_is_sklearn_make_moons():
    expected, _ = make_moons(500, noise=0.1, random_state=3)
    np.testing.assert_array_equal(data.moons(500, noise=0.1, seed=3), expected.astype(np.float32))


def test_text_is_centred_and_spans_minus_two_to_two():
    x = data.text("SIGGRAPH", n=5000)
    assert x[:, 0].min() >= -2.0 and x[:, 0].max() <= 2.0
    assert x[:, 0].min() < -1.95 and x[:, 0].max() > 1.95
    assert abs(x[:, 1].max() + x[:, 1].min()) < 0.05  # vertically centred
    assert 0.2 < x[:, 1].max() < 0.4  # aspect ratio kept: a wide, flat word


@pytest.mark.parametrize(
    "letter, hole_centre, hole_radius, stroke_radius",
    [("O", (0.0, 0.0), 0.8, 1.5), ("A", (0.0, -0.1), 0.25, 0.8)],
)
def test_text_holes_stay_empty(letter, hole_centre, hole_radius, stroke_radius):
    x = data.text(letter, n=20000)
    distance = np.linalg.norm(x - hole_centre, axis=1)
    assert distance.min() > hole_radius
    # The strokes around the hole are filled, so the letter is not just an empty box.
    assert np.count_nonzero(distance < stroke_radius) > 1000


def test_text_noise_perturbs_points():
    clean = data.text("NF", n=1000, seed=4)
    noisy = data.text("NF", n=1000, seed=4, noise=0.05)
    assert 0.02 < np.std(noisy - clean) < 0.08


def test_rings_lie_on_the_given_radii():
    x = data.rings(3000, noise=0.0, radii=(0.5, 3.5))
    r = np.linalg.norm(x, axis=1)
    on_inner = np.isclose(r, 0.5, atol=1e-5)
    assert (on_inner | np.isclose(r, 3.5, atol=1e-5)).all()
    # Points per circle are proportional to the radius: 1/8 of them on the inner one.
    assert abs(on_inner.mean() - 0.125) < 0.03


def test_checkerboard_fills_only_dark_cells():
    x = data.checkerboard(4000, cells=8)
    assert (np.abs(x) <= 4.0).all()
    cell = np.floor(x + 4).astype(int)
    assert ((cell.sum(axis=1) % 2) == 0).all()
    assert len(np.unique(cell, axis=0)) == 32


def test_pinwheel_arms_point_in_evenly_spaced_directions():
    x = data.pinwheel(1000, arms=4, rate=0.0, tangential_std=1e-4)
    angle = np.degrees(np.arctan2(x[:, 1], x[:, 0])) % 360
    nearest = np.round(angle / 90) * 90
    assert np.abs(angle - nearest).max() < 0.1
    assert sorted(np.unique(nearest % 360)) == [0, 90, 180, 270]


def test_gaussian_mixture_components():
    x = data.gaussian_mixture(8000, centers=4, radius=3.0, std=0.1)
    means = np.stack([x[k::4].mean(axis=0) for k in range(4)])
    np.testing.assert_allclose(means, [[3, 0], [0, 3], [-3, 0], [0, -3]], atol=0.02)
    np.testing.assert_allclose(x[0::4].std(axis=0), [0.1, 0.1], atol=0.01)


@pytest.mark.parametrize(
    "make, kwargs, error, match",
    [
        (data.moons, {"n": 0}, ValueError, r"`n` must be an integer >= 1, got 0"),
        (data.moons, {"n": 10.0}, TypeError, r"`n` must be an integer, got 10.0"),
        (data.moons, {"n": 10, "noise": -1.0}, ValueError, r"`noise` must be .* got -1.0"),
        (data.moons, {"n": 10, "noise": "a"}, TypeError, r"`noise` must be a real number"),
        (data.moons, {"n": 10, "seed": -3}, ValueError, r"`seed` must be .* got -3"),
        (data.text, {"text": ""}, ValueError, r"`text` must contain .* got ''"),
        (data.text, {"text": "   "}, ValueError, r"`text` must contain .* got '   '"),
        (data.text, {"text": 42}, TypeError, r"`text` must be a string, got 42"),
        (data.text, {"n": 0}, ValueError, r"`n` must be an integer >= 1, got 0"),
        (data.text, {"noise": float("nan")}, ValueError, r"`noise` must be a finite"),
        (data.rings, {"n": 10, "radii": ()}, ValueError, r"`radii` must be a non-empty"),
        (data.rings, {"n": 10, "radii": (1.0, 0.0)}, ValueError, r"`radii\[i\]` .* got 0.0"),
        (data.checkerboard, {"n": 10, "cells": 1}, ValueError, r"`cells` .* >= 2, got 1"),
        (data.pinwheel, {"n": 10, "arms": 0}, ValueError, r"`arms` .* >= 1, got 0"),
        (data.pinwheel, {"n": 10, "radial_std": 0}, ValueError, r"`radial_std` .* > 0"),
        (data.gaussian_mixture, {"n": 10, "std": -0.1}, ValueError, r"`std` .* got -0.1"),
        (data.gaussian_mixture, {"n": 10, "centers": True}, TypeError, r"`centers` .* True"),
    ],
)
def test_bad_arguments(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_moons_log_prob_is_a_normalised_density_that_fits_the_data():
    from nfbook.data import moons, moons_log_prob

    # cells of 0.025, half the noise: the grid sum is then exact to 1e-8 (as on 0.0125)
    xs = np.linspace(-2.0, 3.0, 201)
    ys = np.linspace(-1.5, 2.0, 141)
    xx, yy = np.meshgrid(xs, ys)
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    p = np.exp(moons_log_prob(grid, num_angles=500))
    assert abs(p.sum() * (xs[1] - xs[0]) * (ys[1] - ys[0]) - 1.0) < 2e-3
    # the data's own points are far more likely than points shifted off the arcs
    data = moons(500, seed=3)
    assert np.mean(moons_log_prob(data)) > np.mean(moons_log_prob(data + [0.0, 0.3])) + 5.0


def test_moons_entropy_matches_a_monte_carlo_estimate_of_many_points():
    from nfbook.data import moons, moons_entropy, moons_log_prob

    entropy = moons_entropy()
    log_p = moons_log_prob(moons(40000, seed=5))  # standard error about 0.0037
    assert abs(-log_p.mean() - entropy) < 4 * log_p.std() / np.sqrt(log_p.size), entropy
    assert moons_entropy(noise=0.1) > entropy + 0.5  # more noise, more entropy
    for noise in (0.0, 0.005):  # not positive; so thin that the grid would take minutes
        with pytest.raises(ValueError, match="noise"):
            moons_entropy(noise=noise)
