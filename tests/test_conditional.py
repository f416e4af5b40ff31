"""Conditional flows p(x | c): builders with context_dim, FlowModel's context everywhere, TFP's
bijector_kwargs route, save/load, and the errors for bad contexts."""

import json
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook
from nfbook.conditional import bijector_kwargs, context_dim_of

from invariants import assert_bijective_and_finite, fresh, randomize

tfb = tfp.bijectors
tfd = tfp.distributions

BUILDERS = {
    "maf": lambda d, k: nfbook.maf(d, hidden_units=(16, 16), num_layers=3, context_dim=k),
    "iaf": lambda d, k: nfbook.iaf(d, hidden_units=(16, 16), num_layers=3, context_dim=k),
    "realnvp": lambda d, k: nfbook.realnvp(d, hidden_units=(16, 16), num_layers=3,
                                           context_dim=k),
    "nice": lambda d, k: nfbook.nice(d, hidden_units=(16, 16), num_layers=3, context_dim=k),
    "nsf": lambda d, k: nfbook.nsf(d, hidden_units=(16, 16), num_layers=3, context_dim=k),
    "nsf_autoregressive": lambda d, k: nfbook.nsf(d, hidden_units=(16, 16), num_layers=3,
                                                  context_dim=k, autoregressive=True),
}


class WithContext:
    """A conditional bijector with its context bound: the object the invariants take. The
    context is tiled to the number of rows it is applied to (the autodiff Jacobian stacks
    copies of the points)."""

    def __init__(self, flow, context):
        self.flow, self.context = flow, tf.constant(context, tf.float32)

    def _kwargs(self, x):
        copies = tf.shape(x)[0] // tf.shape(self.context)[0]
        return bijector_kwargs(self.flow, tf.tile(self.context, [copies, 1]))

    def forward(self, z):
        return self.flow.forward(z, **self._kwargs(z))

    def inverse(self, x):
        return self.flow.inverse(x, **self._kwargs(x))

    def forward_log_det_jacobian(self, z, event_ndims):
        return self.flow.forward_log_det_jacobian(z, event_ndims, **self._kwargs(z))

    def inverse_log_det_jacobian(self, x, event_ndims):
        return self.flow.inverse_log_det_jacobian(x, event_ndims, **self._kwargs(x))


def random_flow(builder, ndim, context_dim, seed=0):
    """A small conditional flow with every variable random; a spline flow's networks are then
    halved, as in test_splines (random full-size weights make bins too flat to invert in
    float32)."""
    flow = BUILDERS[builder](ndim, context_dim)
    flow.forward(tf.zeros([1, ndim]), **bijector_kwargs(flow, tf.zeros([1, context_dim])))
    randomize(flow, np.random.default_rng(seed))
    if builder.startswith("nsf"):
        for layer in flow.bijectors:
            function = getattr(layer, "_bijector_fn", None)
            for variable in getattr(function, "trainable_variables", ()):
                variable.assign(variable * 0.5)
    return flow


def gaussian_pairs(n, seed, sigma=0.2):
    """x = (c, -2c) + sigma * noise, c ~ N(0, 1): p(x | c) is N((c, -2c), sigma^2 I), whose
    entropy is log(2 pi e sigma^2) for any c."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n, 1)).astype(np.float32)
    x = (c * np.array([1.0, -2.0]) + sigma * rng.normal(size=(n, 2))).astype(np.float32)
    return x, c


@pytest.mark.parametrize("builder", list(BUILDERS))
@pytest.mark.parametrize("ndim", [2, 3])
def test_every_builder_is_a_bijection_for_every_fixed_context(builder, ndim):
    flow = random_flow(builder, ndim, context_dim=2)
    assert context_dim_of(flow) == 2
    for seed in (0, 1):
        context = np.random.default_rng(seed).normal(size=(64, 2))
        assert_bijective_and_finite(WithContext(flow, context), ndim, seed=seed)


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_nfbook_and_tfp_routes_give_the_same_density_and_the_context_matters(builder):
    flow = random_flow(builder, 2, context_dim=1, seed=3)
    model = nfbook.FlowModel(flow, ndim=2)
    assert model.context_dim == 1
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2)).astype(np.float32)
    c = rng.normal(size=(32, 1)).astype(np.float32)
    ours = model.log_prob(x, context=c).numpy()
    theirs = model.distribution.log_prob(fresh(x), bijector_kwargs=bijector_kwargs(flow, c))
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(model((x, c)), ours, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, context=c, batch_size=8, verbose=0), ours,
                               atol=1e-5)
    assert np.abs(model.log_prob(x, context=c + 1.0).numpy() - ours).max() > 1e-2


@pytest.mark.parametrize("builder", ["maf", "realnvp"])
def test_a_conditional_flow_learns_a_gaussian_of_known_entropy(builder):
    nfbook.set_seed(1)
    x, c = gaussian_pairs(2000, seed=0)
    x_val, c_val = gaussian_pairs(2000, seed=1)
    model = nfbook.FlowModel(BUILDERS[builder](2, 1), ndim=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, context=c, validation_data=(x_val, c_val), epochs=15,
                        batch_size=128, verbose=0)
    entropy = np.log(2 * np.pi * np.e * 0.2**2)
    assert history.history["val_loss"][-1] == pytest.approx(
        model.evaluate(x_val, context=c_val, verbose=0), abs=1e-5)
    assert model.evaluate(x_val, context=c_val, verbose=0) < entropy + 0.05
    # samples follow their context: the mean of x given c = 1 is (1, -2)
    samples = model.sample(2000, seed=0, context=[[1.0]]).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), [1.0, -2.0], atol=0.1)


def test_fit_takes_tf_data_pairs_and_single_point_pairs():
    x, c = gaussian_pairs(512, seed=0)
    model = nfbook.FlowModel(BUILDERS["maf"](2, 1), ndim=2)
    model.compile()
    batches = tf.data.Dataset.from_tensor_slices((x, c)).batch(64)
    before = model.evaluate(batches, verbose=0)
    history = model.fit(batches, epochs=3, verbose=0, validation_data=batches)
    assert history.history["loss"][-1] < before
    points = tf.data.Dataset.from_tensor_slices((x, c.astype(np.float64)))  # cast to float32
    model.fit(points, epochs=1, batch_size=128, verbose=0)
    assert model.evaluate(x, context=c, verbose=0) == pytest.approx(
        model.evaluate(batches, verbose=0), abs=1e-4)
    np.testing.assert_allclose(model.predict(batches, verbose=0),
                               model.log_prob(x, context=c), atol=1e-5)


def test_sample_takes_one_context_per_sample_or_one_for_all():
    model = nfbook.FlowModel(random_flow("realnvp", 2, 1), ndim=2)
    shared = model.sample(5, seed=1, context=[[0.5]]).numpy()
    per_sample = model.sample(5, seed=1, context=np.full((5, 1), 0.5)).numpy()
    np.testing.assert_allclose(shared, per_sample)
    other = model.sample(5, seed=1, context=np.full((5, 1), -0.5)).numpy()
    assert np.abs(other - shared).max() > 1e-3


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_save_and_load_keep_a_conditional_flow(builder, tmp_path):
    model = nfbook.FlowModel(random_flow(builder, 2, 3, seed=2), ndim=2)
    model.compile()
    path = tmp_path / "flow.nfbook"
    model.save(path)
    loaded = nfbook.load(path)
    assert loaded.context_dim == 3
    x, c = np.random.default_rng(0).normal(size=(2, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.log_prob(x[:, :2], context=c),
                               model.log_prob(x[:, :2], context=c), atol=1e-5)
    with zipfile.ZipFile(path) as archive:
        record = json.loads(archive.read("model.json"))
    assert record["format_version"] == 4 and record["context_dim"] == 3


def test_an_unconditional_model_is_still_saved_in_the_previous_format(tmp_path):
    path = tmp_path / "flow.nfbook"
    flow = nfbook.maf(2, hidden_units=(8,), num_layers=2)
    assert "context_dim" not in json.dumps(flow._nfbook_spec)
    nfbook.FlowModel(flow, ndim=2).save(path)
    with zipfile.ZipFile(path) as archive:
        record = json.loads(archive.read("model.json"))
    assert record["format_version"] == 3 and "context_dim" not in record


def test_a_flow_of_tfp_conditional_networks_needs_context_dim_and_then_works():
    def made():
        return tfb.AutoregressiveNetwork(params=2, event_shape=[2], hidden_units=[8],
                                         conditional=True, conditional_event_shape=[1])

    flow = tfb.Chain([tfb.MaskedAutoregressiveFlow(made(), name="maf_b"),
                      tfb.MaskedAutoregressiveFlow(made(), name="maf_a")])
    with pytest.raises(ValueError, match="needs a context .*context_dim=k"):
        nfbook.FlowModel(flow, ndim=2)
    model = nfbook.FlowModel(flow, ndim=2, context_dim=1)
    x, c = gaussian_pairs(64, seed=0)
    np.testing.assert_allclose(
        model.log_prob(x, context=c),
        model.distribution.log_prob(fresh(x), bijector_kwargs=bijector_kwargs(flow, c)),
        atol=1e-5)
    model.compile()
    model.fit(x, context=c, epochs=1, verbose=0)


@pytest.fixture(scope="module")
def conditional():
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), num_layers=2, context_dim=2),
                             ndim=2)
    model.compile()
    return model


@pytest.fixture(scope="module")
def unconditional():
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), num_layers=2), ndim=2)
    model.compile()
    return model


X = np.zeros((10, 2), np.float32)
C = np.zeros((10, 2), np.float32)

MISSING = "conditional \\(context_dim=2\\): pass `context`"
UNEXPECTED = "unconditional \\(built without context_dim\\), but `context` was given"
WIDTH = "`context` has shape \\(10, 3\\); expected \\(n, 2\\)"
ROWS = "`context` has 9 rows but the data has 10"
CALLS = {
    "fit": lambda m, c: m.fit(X, context=c, epochs=1, verbose=0),
    "evaluate": lambda m, c: m.evaluate(X, context=c, verbose=0),
    "predict": lambda m, c: m.predict(X, context=c, verbose=0),
    "log_prob": lambda m, c: m.log_prob(X, context=c),
    "validation_data": lambda m, c: m.fit(X, context=C if m.context_dim else None,
                                          validation_data=(X, c), epochs=1, verbose=0),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_bad_contexts_are_refused_by_every_call(call, conditional, unconditional):
    run = CALLS[call]
    if call != "validation_data":  # a missing validation context is read as (x,)
        with pytest.raises(ValueError, match=MISSING):
            run(conditional, None)
    with pytest.raises(ValueError, match=UNEXPECTED):
        run(unconditional, C)
    with pytest.raises(ValueError, match=WIDTH):
        run(conditional, np.zeros((10, 3)))
    with pytest.raises(ValueError, match=ROWS):
        run(conditional, np.zeros((9, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        run(conditional, np.full((10, 2), np.nan))


def test_a_missing_validation_context_is_refused(conditional):
    with pytest.raises(ValueError, match=MISSING):
        conditional.fit(X, context=C, validation_data=X, epochs=1, verbose=0)


def test_sample_refuses_a_missing_extra_or_mis_sized_context(conditional, unconditional):
    with pytest.raises(ValueError, match=MISSING):
        conditional.sample(4)
    with pytest.raises(ValueError, match=UNEXPECTED):
        unconditional.sample(4, context=C)
    with pytest.raises(ValueError, match="`context` has 3 rows; expected 1 .* or n=4"):
        conditional.sample(4, context=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="expected \\(n, 2\\)"):
        conditional.sample(4, context=np.zeros(2))  # a 1-D context is not guessed at


def test_data_sets_must_match_the_flow(conditional, unconditional):
    points = tf.data.Dataset.from_tensor_slices(X).batch(5)
    pairs = tf.data.Dataset.from_tensor_slices((X, C)).batch(5)
    with pytest.raises(ValueError, match="must yield \\(x, context\\) pairs"):
        conditional.fit(points, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="unconditional: it takes points only"):
        unconditional.fit(pairs, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="must bring its context itself"):
        conditional.fit(pairs, context=C, epochs=1, verbose=0)
    wide = tf.data.Dataset.from_tensor_slices((X, np.zeros((10, 3), np.float32))).batch(5)
    with pytest.raises(ValueError, match="context of `x`.*expected 2 columns"):
        conditional.fit(wide, epochs=1, verbose=0)
    bad = np.zeros((10, 2), np.float32)
    bad[7] = np.inf
    with pytest.raises(ValueError, match="the context of `x`.* NaN or infinite values: 1 of "
                                         "the 5 rows of batch 2 of epoch 1"):
        conditional.fit(tf.data.Dataset.from_tensor_slices((X, bad)).batch(5), epochs=1,
                        verbose=0)
    uneven = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(X).batch(5),
                                  tf.data.Dataset.from_tensor_slices(C).batch(4)))
    with pytest.raises(ValueError, match="a batch of 5 points with 4 context rows"):
        conditional.fit(uneven, epochs=1, verbose=0)


def test_calling_the_model_checks_its_inputs(conditional, unconditional):
    with pytest.raises(ValueError, match="call it on the pair \\(x, context\\)"):
        conditional(X)
    with pytest.raises(ValueError, match="call it on points x, not on a pair"):
        unconditional((X, C))
    with pytest.raises(ValueError, match="context_dim=2"):
        conditional((X, np.zeros((10, 3), np.float32)))


@pytest.mark.parametrize("builder", ["maf", "iaf", "realnvp", "nice", "nsf"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_builders_refuse_a_bad_context_dim(builder, bad):
    with pytest.raises((ValueError, TypeError), match="context_dim"):
        getattr(nfbook, builder)(2, context_dim=bad)


def test_flow_model_refuses_a_context_dim_that_differs_from_the_flow():
    with pytest.raises(ValueError, match="`context_dim=2` differs from the bijector's"):
        nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), context_dim=1), ndim=2,
                         context_dim=2)


def test_reverse_kl_and_flow_matching_take_no_context(conditional):
    with pytest.raises(ValueError, match="Reverse-KL training of a conditional flow"):
        conditional.fit_reverse_kl(lambda x: -tf.reduce_sum(x**2, axis=-1))
    matching = nfbook.FlowMatching(2, hidden_units=(8,))
    matching.compile()
    with pytest.raises(ValueError, match=UNEXPECTED):
        matching.fit(X, context=C, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="takes no labels"):
        conditional.evaluate(X, C)


@pytest.mark.parametrize("builder", ["maf", "nsf"])
def test_check_flow_checks_a_conditional_flow_at_one_context(builder):
    flow = random_flow(builder, 2, 1, seed=4)
    for context in ([0.5], [[-1.0]]):
        report = nfbook.check_flow(flow, 2, context=context, num_points=64, resolution=150)
        assert abs(report.integral - report.expected_integral) < 0.02
    with pytest.raises(ValueError, match="one context, shape \\(k,\\) or \\(1, k\\)"):
        nfbook.check_flow(flow, 2, context=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="conditional_input"):
        nfbook.check_flow(flow, 2)  # the flow needs its context


def test_density_plots_take_the_context_of_a_conditional_flow(conditional, unconditional):
    import matplotlib.pyplot as plt

    from nfbook.plot_density import density_grid

    context = [0.3, -0.2]
    _, yy, p = density_grid(conditional, resolution=20, context=context)
    xx = np.stack([_.ravel(), yy.ravel()], axis=1)
    expected = np.exp(conditional.log_prob(xx, context=np.tile(context, (400, 1))))
    np.testing.assert_allclose(p.ravel(), expected, rtol=1e-5)
    ax = nfbook.plot.density(conditional, resolution=20, context=[context])
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="not a conditional nfbook.FlowModel"):
        density_grid(unconditional, resolution=20, context=context)
    with pytest.raises(ValueError, match=MISSING):
        density_grid(conditional, resolution=20)
