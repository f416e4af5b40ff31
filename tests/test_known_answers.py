"""Known answers: every builder, at its default settings, fits correlated Gaussians of known
entropy in 2 to 16 dimensions to within 0.05 nats (small budgets; the full sizes are in
``benchmarks/known_answers.py``, which poses the same problem)."""

import numpy as np
import pytest
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook

tfd = tfp.distributions

BUILDERS = ["maf", "iaf", "realnvp", "nice", "nsf"]
DIMS = [2, 3, 4, 8, 16]
TOLERANCE = 0.05  # nats
# Training points, epochs and batch size per dimension; Adam 1e-2 with a cosine decay. The
# IAF takes as many steps of reverse KL (its density of given points takes D passes). Few
# epochs of many points: 16-D flows overfit 16,384 points within 20 epochs.
RECIPES = {2: (4096, 10, 256), 3: (4096, 10, 256), 4: (8192, 8, 256), 8: (32768, 5, 512),
           16: (65536, 5, 512)}


def covariance(ndim):
    """A fixed random covariance: variances exp(-1.5) to exp(1.5), evenly spaced in log,
    along the axes of a random rotation (condition number exp(3), about 20)."""
    rng = np.random.default_rng(1000 + ndim)
    rotation, _ = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return rotation @ np.diag(np.exp(np.linspace(-1.5, 1.5, ndim))) @ rotation.T


def fit_gap(builder, ndim, seed=0):
    """Held-out NLL of the trained flow minus the true NLL of the same 4,000 points: an
    estimate of KL(p || q), whose expectation is that of held-out NLL minus the entropy
    0.5 log det(2 pi e Sigma), with far less noise."""
    num_train, epochs, batch_size = RECIPES[ndim]
    sigma = covariance(ndim)
    target = tfd.MultivariateNormalTriL(scale_tril=np.linalg.cholesky(sigma).astype(np.float32))
    x = target.sample(num_train, seed=(seed, 1)).numpy()
    x_test = target.sample(4000, seed=(seed, 2)).numpy()
    nfbook.set_seed(seed)
    model = nfbook.FlowModel(getattr(nfbook, builder)(ndim), ndim=ndim)
    steps_per_epoch = -(-num_train // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    if builder == "iaf":
        model.fit_reverse_kl(target.log_prob, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             batch_size=batch_size, verbose=0, seed=seed)
    else:
        model.fit(x, epochs=epochs, batch_size=batch_size, verbose=0)
    return float(np.mean(target.log_prob(x_test) - model.log_prob(x_test)))


def test_the_problem_has_the_stated_entropy():
    # The true NLL of the held-out points averages to the entropy the gap is measured from.
    for ndim in DIMS:
        sigma = covariance(ndim)
        target = tfd.MultivariateNormalTriL(scale_tril=np.linalg.cholesky(sigma))
        entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * sigma)[1]
        nll = -target.log_prob(target.sample(200_000, seed=(0, 3))).numpy()
        assert abs(nll.mean() - entropy) < 4 * nll.std() / np.sqrt(nll.size)
        correlations = sigma / np.sqrt(np.outer(np.diag(sigma), np.diag(sigma)))
        assert np.abs(correlations - np.eye(ndim)).max() > 0.3  # not a diagonal problem


@pytest.mark.parametrize("ndim", DIMS)
@pytest.mark.parametrize("builder", BUILDERS)
def test_default_flow_fits_a_correlated_gaussian(builder, ndim):
    gap = fit_gap(builder, ndim)
    assert gap <= TOLERANCE, f"{builder}, D = {ndim}: {gap:.3f} nats above the true NLL"
