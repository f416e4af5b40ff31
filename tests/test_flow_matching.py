import itertools
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook
from nfbook.flow_matching import flow_matching_loss
from nfbook.optimal_transport import ot_couple, ot_pairing, wasserstein2

tfd = tfp.distributions

# Base N(0, I), data N(m, s^2 I): x_t = (1 - t) x0 + t x1 has variance
# v_t = (1 - t)^2 + t^2 s^2 per coordinate, and the field that flow matching should learn is
# E[x1 - x0 | x_t = x] = m + c_t (x - t m) with c_t = (t s^2 - (1 - t)) / v_t.
MEAN, SCALE = np.array([2.0, -1.0], np.float32), 0.5


def gaussian_data(n, seed=0):
    return (MEAN + SCALE * np.random.default_rng(seed).normal(size=(n, 2))).astype(np.float32)


def gaussian_field(t, x):
    t = np.asarray(t, np.float32)
    v_t = (1 - t) ** 2 + t**2 * SCALE**2
    return MEAN + (t * SCALE**2 - (1 - t)) / v_t * (x - t * MEAN)



@pytest.fixture(scope="module")
def gaussian_flow_matching():
    nfbook.set_seed(0)
    data = gaussian_data(8000)
    model = nfbook.FlowMatching(2, hidden_units=(64, 64))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(data, epochs=25, batch_size=256, verbose=0)
    return model, history



def test_flow_matching_loss_at_the_optimum():
    # With the exact field the mean loss is the leftover variance of x1 - x0 given x_t:
    # per coordinate Var(x1 - x0) - Cov(x1 - x0, x_t)^2 / v_t = 1 + s^2 - c_t^2 v_t.
    rng = np.random.default_rng(5)
    n = 200_000
    x0 = rng.normal(size=(n, 2)).astype(np.float32)
    x1 = (MEAN + SCALE * rng.normal(size=(n, 2))).astype(np.float32)
    t = rng.uniform(size=(n, 1)).astype(np.float32)
    loss = flow_matching_loss(gaussian_field, x1, x0, t).numpy()
    v_t = (1 - t) ** 2 + t**2 * SCALE**2
    expected = 2 * np.mean(1 + SCALE**2 - (t * SCALE**2 - (1 - t)) ** 2 / v_t)
    assert abs(loss.mean() - expected) < 4 * loss.std() / np.sqrt(n)
    worse = flow_matching_loss(lambda t, x: gaussian_field(t, x) + 0.3, x1, x0, t).numpy()
    np.testing.assert_allclose(worse.mean() - loss.mean(), 2 * 0.3**2, rtol=0.05)


def test_flow_matching_learns_the_straight_line_field_between_gaussians(gaussian_flow_matching):
    model, history = gaussian_flow_matching
    assert history.history["loss"][-1] < history.history["loss"][0]
    rng = np.random.default_rng(3)
    errors = []
    for t in (0.2, 0.5, 0.8):
        v_t = (1 - t) ** 2 + t**2 * SCALE**2
        x = (t * MEAN + np.sqrt(v_t) * rng.normal(size=(500, 2))).astype(np.float32)
        learned = model.field(t, tf.constant(x)).numpy()
        errors.append(np.mean(np.linalg.norm(learned - gaussian_field(t, x), axis=1)))
    assert max(errors) < 0.25, errors
    samples = model.sample(2000, seed=(1, 2)).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), MEAN, atol=0.1)
    np.testing.assert_allclose(samples.std(axis=0), [SCALE, SCALE], atol=0.1)
    # and the density through the ODE is close to the target N(m, s^2 I)
    target = tfd.MultivariateNormalDiag(loc=MEAN, scale_diag=[SCALE, SCALE])
    x = target.sample(500, seed=(3, 4))
    np.testing.assert_allclose(np.mean(model.log_prob(x)), np.mean(target.log_prob(x)),
                               atol=0.1)


def test_flow_matching_model_works_with_the_plotting_helpers(gaussian_flow_matching):
    model, _ = gaussian_flow_matching
    x = model.sample(50, seed=(5, 6))
    # the same base draw; the solver's steps differ (no trace here), within its tolerance
    np.testing.assert_allclose(model.distribution.sample(50, seed=(5, 6)), x, atol=5e-3)
    np.testing.assert_allclose(model.log_prob(x), model.distribution.log_prob(x), atol=1e-4)
    np.testing.assert_allclose(model.prob(x), np.exp(model.log_prob(x)), rtol=1e-5)
    extent = (MEAN[0] - 3, MEAN[0] + 3, MEAN[1] - 3, MEAN[1] + 3)
    _, _, p = nfbook.plot.density_grid(model, extent, resolution=60)
    assert abs(p.sum() * (6 / 60) ** 2 - 1) < 0.02
    stages = nfbook.plot.stage_samples(model, 100, seed=0)
    assert [name for name, _ in stages] == ["base", "ffjord"]



def test_flow_matching_trains_with_the_default_adam():
    nfbook.set_seed(0)
    model = nfbook.FlowMatching(2, hidden_units=(8,))
    model.compile()
    assert type(model.optimizer) is keras.optimizers.Adam
    model.fit(nfbook.data.moons(256), batch_size=64, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 8
    assert np.isfinite(model.history.history["loss"]).all()


def test_flow_matching_model_saves_its_weights():
    x = nfbook.data.moons(20)
    matching = nfbook.FlowMatching(2, hidden_units=(8,))
    for variable in matching.field.variables:
        variable.assign(tf.random.normal(variable.shape, stddev=0.3))
    with tempfile.TemporaryDirectory() as folder:
        with pytest.raises(NotImplementedError, match="save_weights"):
            matching.save(f"{folder}/fm.keras")
        matching.save_weights(f"{folder}/fm")
        again = nfbook.FlowMatching(2, hidden_units=(8,))
        again.load_weights(f"{folder}/fm")
        np.testing.assert_allclose(again.log_prob(x), matching.log_prob(x), atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="`ndim` must be an integer >= 1, got 0"):
        nfbook.FlowMatching(0)
    with pytest.raises(ValueError, match=r"`coupling` must be one of \('independent', 'ot'\)"):
        nfbook.FlowMatching(2, coupling="sinkhorn")
    model = nfbook.FlowMatching(2, hidden_units=(8,))
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((4, 2), np.float32))
    model.compile()
    with pytest.raises(TypeError, match="takes no labels"):
        model.fit(np.zeros((4, 2), np.float32), np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(4, 3\); expected \(n, 2\)"):
        model.fit(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="1 row"):
        model.log_prob([[0.0, np.nan]])
    with pytest.raises(TypeError, match="takes no `loss`"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="`num_steps` must be an integer >= 1, got 0"):
        model.sample(3, num_steps=0)
    with pytest.raises(nfbook.NonFiniteLossError, match="flow-matching loss"):
        model.fit(np.full((8, 2), 1e30, np.float32), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="as many points, got 3 and 4"):
        ot_pairing(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`x0` must have shape \(n, D\)"):
        ot_pairing(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="x1"):
        wasserstein2(np.zeros((3, 2)), np.full((3, 2), np.inf))


def test_standardized_model_is_the_affine_map_of_its_flow():
    loc, scale = np.array([1.0, -2.0], np.float32), np.array([2.0, 0.5], np.float32)
    plain = nfbook.FlowMatching(2, hidden_units=(8,), time_features=2)
    standardized = nfbook.FlowMatching(2, hidden_units=(8,), time_features=2, loc=loc,
                                       scale=scale)
    for source, target in zip(plain.field.variables, standardized.field.variables):
        source.assign(tf.random.normal(source.shape, stddev=0.5, seed=1))
        target.assign(source)
    x = nfbook.data.moons(50)
    np.testing.assert_allclose(standardized.log_prob(x),
                               plain.log_prob((x - loc) / scale) - np.log(scale).sum(), atol=1e-4)
    for steps in (None, 3):
        np.testing.assert_allclose(standardized.sample(20, seed=(1, 2), num_steps=steps),
                                   loc + scale * plain.sample(20, seed=(1, 2), num_steps=steps),
                                   atol=1e-5)
    # training sees the standardised data: the same loss for the same draws
    tf.random.set_seed(3)
    loss_standardized = standardized.flow_matching_loss(standardized._standardize(x))
    tf.random.set_seed(3)
    np.testing.assert_allclose(loss_standardized, plain.flow_matching_loss((x - loc) / scale),
                               atol=1e-5)
    with pytest.raises(ValueError, match="`scale` must be a number or 2 positive numbers"):
        nfbook.FlowMatching(2, scale=[1.0, -1.0])
    with pytest.raises(ValueError, match="`loc` must be a number or 2 finite numbers"):
        nfbook.FlowMatching(2, loc=[0.0, 1.0, 2.0])


def test_ot_pairing_is_the_optimal_permutation():
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(7, 2)), rng.normal(size=(7, 2)) + [2.0, 0.0]
    perm = ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(7))  # a permutation

    def cost(p):
        return float(np.sum((x0[list(p)] - x1) ** 2))

    best = min(itertools.permutations(range(7)), key=cost)  # all 5,040 pairings
    np.testing.assert_allclose(cost(perm), cost(best), rtol=1e-12)
    assert cost(perm) < cost(range(7))  # below the independent (given) pairing
    np.testing.assert_allclose(wasserstein2(x0, x1), np.sqrt(cost(best) / 7), rtol=1e-6)


def test_ot_coupling_shortens_a_batch_and_runs_in_a_graph():
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(256, 2)).astype(np.float32)
    x1 = nfbook.data.moons(256, seed=2)
    independent = np.sum((x0 - x1) ** 2)
    coupled = tf.function(ot_couple)(tf.constant(x0), tf.constant(x1)).numpy()
    np.testing.assert_array_equal(coupled, x0[ot_pairing(x0, x1)])
    np.testing.assert_array_equal(np.sort(coupled, axis=0), np.sort(x0, axis=0))  # same points
    assert np.sum((coupled - x1) ** 2) < 0.5 * independent
    # in blocks of 100 rows (the last one 56): each block is paired exactly within itself
    blocked = ot_couple(tf.constant(x0), tf.constant(x1), block_size=100).numpy()
    for start in (0, 100, 200):
        block = slice(start, start + 100)
        np.testing.assert_array_equal(blocked[block], x0[block][ot_pairing(x0[block], x1[block])])
    assert np.sum((coupled - x1) ** 2) < np.sum((blocked - x1) ** 2) < 0.6 * independent
    with pytest.raises(ValueError, match="`block_size` must be an integer >= 1, got 0"):
        ot_couple(tf.constant(x0), tf.constant(x1), block_size=0)


def test_wasserstein2_of_a_translated_set_is_the_translation():
    # sum_i (x_pi(i) - x_i) = 0 for any permutation, so the identity pairing is optimal
    x = np.random.default_rng(2).normal(size=(100, 2))
    np.testing.assert_allclose(wasserstein2(x, x + [3.0, 4.0]), 5.0, rtol=1e-6)
    assert wasserstein2(x, x) == 0.0


def test_euler_sampling_converges_to_the_adaptive_solver(gaussian_flow_matching):
    model, _ = gaussian_flow_matching
    adaptive = model.sample(500, seed=(7, 8)).numpy()
    errors = [np.abs(model.sample(500, seed=(7, 8), num_steps=k).numpy() - adaptive).max()
              for k in (4, 16, 64, 256)]
    # Euler is first order: four times the steps, about a quarter of the error
    assert errors[-1] < 0.01 and all(a > 2.5 * b for a, b in zip(errors, errors[1:])), errors


def test_ot_coupling_learns_straight_paths_between_gaussians(gaussian_flow_matching):
    # From N(0, I) to N(m, s^2 I) the OT map is x -> m + s x, a straight-line flow: one Euler
    # step lands on it. The independent coupling's field at t = 0 is E[x1 - x0 | x0] = m - x0,
    # so one Euler step sends every point to m.
    independent, _ = gaussian_flow_matching
    nfbook.set_seed(0)
    ot_model = nfbook.FlowMatching(2, hidden_units=(64, 64), coupling="ot")
    ot_model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = ot_model.fit(gaussian_data(4000), epochs=20, batch_size=128, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]  # nearly exact pairs
    one_step = ot_model.sample(2000, seed=(1, 2), num_steps=1).numpy()
    np.testing.assert_allclose(one_step.mean(axis=0), MEAN, atol=0.1)
    np.testing.assert_allclose(one_step.std(axis=0), [SCALE, SCALE], atol=0.1)
    collapsed = independent.sample(2000, seed=(1, 2), num_steps=1).numpy()
    assert collapsed.std(axis=0).max() < 0.3  # against SCALE = 0.5
    target = tfd.MultivariateNormalDiag(loc=MEAN, scale_diag=[SCALE, SCALE])
    held_out = target.sample(2000, seed=(3, 4)).numpy()
    assert wasserstein2(one_step, held_out) < 0.5 * wasserstein2(collapsed, held_out)
