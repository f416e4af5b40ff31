import importlib
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook
from nfbook import plot

matplotlib.use("Agg")  # before any figure is made; pyplot may already be imported
tfb, tfd = tfp.bijectors, tfp.distributions
pytestmark = pytest.mark.usefixtures("close_figures")


@pytest.fixture
def fake_model():
    chain = tfb.Chain([tfb.Shift([1.0, 2.0]), tfb.Permute([1, 0]), tfb.Scale([2.0, 3.0])])
    base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    return SimpleNamespace(distribution=tfd.TransformedDistribution(base, chain), bijector=chain)


def test_import_leaves_rcparams_alone_and_style_sets_them():
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        defaults = dict(matplotlib.rcParams)
        importlib.reload(plot)
        assert dict(matplotlib.rcParams) == defaults
    before = dict(matplotlib.rcParams)
    with matplotlib.rc_context():
        plot.style()
        assert matplotlib.rcParams["figure.dpi"] == 100
        assert matplotlib.rcParams["savefig.dpi"] == 150
        cycle = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
        assert [matplotlib.colors.to_hex(c) for c in cycle] == [c.lower() for c in plot.PALETTE]
    assert dict(matplotlib.rcParams) == before


def test_density_grid_integrates_a_normal_to_one():
    normal = tfd.MultivariateNormalDiag(loc=[0.3, -0.2], scale_diag=[1.0, 0.7])
    xx, yy, p = plot.density_grid(normal, extent=(-6, 6, -6, 6), resolution=300)
    assert xx.shape == yy.shape == p.shape == (300, 300)
    assert abs(p.sum() * (12 / 300) ** 2 - 1) < 1e-3


def test_density_grid_cell_centres_and_orientation():
    normal = tfd.MultivariateNormalDiag(loc=[1.0, -1.5], scale_diag=[0.3, 0.3])
    xx, yy, p = plot.density_grid(normal, extent=(-2, 2, -3, 1), resolution=40)
    np.testing.assert_allclose(xx[0, :2], [-1.95, -1.85], atol=1e-6)
    np.testing.assert_allclose(yy[:2, 0], [-2.95, -2.85], atol=1e-6)
    row, col = np.unravel_index(np.argmax(p), p.shape)
    assert abs(xx[row, col] - 1.0) < 0.1 and abs(yy[row, col] + 1.5) < 0.1
    np.testing.assert_allclose(p, np.exp(normal.log_prob(np.stack([xx, yy], -1)).numpy()),
                               rtol=1e-5)


def test_density_grid_batches_calls_and_accepts_callables():
    calls = []

    def log_prob(points):
        calls.append(points.shape)
        assert points.dtype == np.float32
        return -np.sum(points**2, axis=1)

    _, _, p = plot.density_grid(log_prob, resolution=10, batch_size=30)
    assert calls == [(30, 2)] * 3 + [(10, 2)]
    _, _, whole = plot.density_grid(log_prob, resolution=10)
    np.testing.assert_array_equal(p, whole)


def test_density_draws_the_grid_as_an_image():
    normal = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    fig, ax = plt.subplots()
    out = plot.density(normal, extent=(-2, 3, -1, 1), resolution=25, ax=ax, cmap="magma")
    assert out is ax and len(ax.images) == 1
    image = ax.images[0]
    np.testing.assert_allclose(image.get_array(), plot.density_grid(normal, (-2, 3, -1, 1), 25)[2])
    assert tuple(image.get_extent()) == (-2, 3, -1, 1) and image.origin == "lower"
    assert image.get_cmap().name == "magma"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x_1$", "$x_2$")
    assert image.get_clim() == (0.0, image.get_array().max())
    assert image.colorbar is not None and image.colorbar.ax in fig.axes
    assert image.colorbar.ax.get_ylabel() == "density $p(x)$"


def test_density_vmax_fixes_the_colour_scale_and_colorbar_can_be_left_out():
    normal = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    fig, ax = plt.subplots()
    plot.density(normal, resolution=10, ax=ax, vmax=0.05, colorbar=False)
    assert ax.images[0].get_clim() == (0.0, 0.05)
    assert ax.images[0].colorbar is None and fig.axes == [ax]


def test_densities_share_one_colour_scale_and_one_colorbar():
    wide = tfd.MultivariateNormalDiag(loc=[0.0, 0.0], scale_diag=[2.0, 2.0])
    narrow = tfd.MultivariateNormalDiag(loc=[1.0, 0.0], scale_diag=[0.5, 0.5])
    axes = plot.densities([wide, narrow], extent=(-4, 4, -4, 4), resolution=30,
                          titles=["wide", "narrow"])
    peak = plot.density_grid(narrow, (-4, 4, -4, 4), 30)[2].max()
    assert [ax.images[0].get_clim() for ax in axes] == [(0.0, peak)] * 2
    assert [ax.get_title() for ax in axes] == ["wide", "narrow"]
    colorbars = {ax.images[0].colorbar for ax in axes} - {None}
    assert len(colorbars) == 1 and len(axes[0].figure.axes) == 3


def test_densities_on_given_axes_with_one_extent_per_model():
    fig, axes = plt.subplots(2, 2)
    normal = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    extents = [(-1, 1, -1, 1), (-2, 2, -3, 3)]
    out = plot.densities([normal, normal], extent=extents, resolution=8, axes=axes[0],
                         colorbar="bottom")
    assert list(out) == list(axes[0])
    assert [tuple(ax.images[0].get_extent()) for ax in out] == extents
    assert not axes[1, 0].images
    colorbar = out[0].images[0].colorbar
    assert colorbar.orientation == "horizontal" and out[1].images[0].colorbar is None
    fig, axes = plt.subplots(1, 2)
    plot.densities([normal, normal], resolution=8, axes=axes, colorbar=None)
    assert len(fig.axes) == 2 and axes[0].images[0].colorbar is None


def test_density_of_a_model_that_is_not_2d_says_so():
    model = nfbook.FlowModel(nfbook.maf(10, hidden_units=(8,), num_layers=1), ndim=10)
    with pytest.raises(ValueError, match=r"need a model of 2-D points; this FlowModel has "
                                         r"ndim=10"):
        plot.density(model)
    normal_3d = tfd.MultivariateNormalDiag(loc=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"has event shape \[3\]"):
        plot.density_grid(normal_3d)
    with pytest.raises(ValueError, match="ndim=1"):
        plot.densities([SimpleNamespace(ndim=1, log_prob=lambda x: x[:, 0])])


def test_density_works_with_a_flow_model_like_object():
    # Anything with log_prob(points) -> (m,) works, e.g. a FlowModel.
    model = SimpleNamespace(log_prob=lambda x: tf.reduce_sum(-tf.abs(x), axis=1))
    ax = plot.density(model, resolution=8)
    assert ax.images[0].get_array().shape == (8, 8)


def test_samples_scatter_the_points():
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    ax = plot.samples(tf.constant(x), color="red", extent=(-5, 5, -4, 4))
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), x)
    assert ax.get_xlim() == (-5, 5) and ax.get_ylim() == (-4, 4)
    assert ax.get_aspect() == 1.0
    assert matplotlib.colors.to_hex(ax.collections[0].get_facecolor()[0]) == "#ff0000"


def test_loss_plots_history_per_epoch():
    history = keras.callbacks.History()
    history.history = {"loss": [3.0, 2.0, 1.5], "val_loss": [3.2, 2.5, 1.9]}
    ax = plot.loss(history, floor=1.2)
    train, val, floor = ax.get_lines()
    np.testing.assert_array_equal(train.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(train.get_ydata(), [3.0, 2.0, 1.5])
    np.testing.assert_array_equal(val.get_ydata(), [3.2, 2.5, 1.9])
    assert floor.get_linestyle() == "--" and list(floor.get_ydata()) == [1.2, 1.2]
    assert ax.get_ylabel() == "NLL (nats)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train", "validation", "entropy floor"]


def test_loss_without_validation():
    ax = plot.loss({"loss": [1.0, 0.5]})
    assert [line.get_label() for line in ax.get_lines()] == ["train"]


def test_stage_samples_apply_the_chain_from_base_to_data(fake_model):
    stages = plot.stage_samples(fake_model, n=64, seed=5)
    assert [label for label, _ in stages] == ["base", "scale [2]", "shift [0]"]
    z = stages[0][1]
    assert z.shape == (64, 2)
    np.testing.assert_array_equal(stages[1][1], z * np.float32([2, 3]))
    expected = np.stack([3 * z[:, 1], 2 * z[:, 0]], axis=1) + np.float32([1, 2])
    np.testing.assert_allclose(stages[2][1], expected, rtol=1e-6)
    np.testing.assert_array_equal(
        stages[2][1], fake_model.distribution.sample(64, seed=(0, 5)).numpy())
    again = plot.stage_samples(fake_model, n=64, seed=5)
    np.testing.assert_array_equal(again[0][1], z)
    assert not np.allclose(plot.stage_samples(fake_model, n=64, seed=6)[0][1], z)


def test_stage_samples_of_a_lone_bijector():
    base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    shift = tfb.Shift([1.0, 1.0])
    model = SimpleNamespace(distribution=tfd.TransformedDistribution(base, shift), bijector=shift)
    (_, z), (label, x) = plot.stage_samples(model, n=10)
    assert label == "shift"
    np.testing.assert_array_equal(x, z + 1)


def test_flow_stages_one_panel_per_stage(fake_model):
    axes = plot.flow_stages(fake_model, n=30, seed=1, extent=(-8, 8, -8, 8))
    stages = plot.stage_samples(fake_model, n=30, seed=1)
    assert len(axes) == 3 and len(axes[0].figure.axes) == 3
    for ax, (label, x) in zip(axes, stages):
        assert ax.get_title() == label
        np.testing.assert_array_equal(ax.collections[0].get_offsets(), x)
        assert ax.get_xlim() == (-8, 8)


def test_flow_stages_on_given_axes(fake_model):
    fig, axes = plt.subplots(3, 1)
    assert list(plot.flow_stages(fake_model, n=5, axes=axes)) == list(axes)
    with pytest.raises(ValueError, match=r"`axes` holds 2 Axes for 3 stages"):
        plot.flow_stages(fake_model, n=5, axes=axes[:2])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: plot.samples(np.zeros(4)), ValueError, r"shape \(4,\); expected \(n, 2\)"),
        (lambda: plot.samples(np.zeros((4, 3))), ValueError, r"shape \(4, 3\)"),
        (lambda: plot.samples(np.zeros((0, 2))), ValueError, r"shape \(0, 2\)"),
        (lambda: plot.samples(np.array([["a", "b"]])), TypeError, "real numbers"),
        (lambda: plot.samples(np.array([[np.nan, 0], [0, 0], [np.inf, 1]])), ValueError,
         r"2 row\(s\) with NaN or infinite values out of 3"),
        (lambda: plot.samples(np.zeros((2, 2)), extent=(1, 0, 0, 1)), ValueError,
         r"`extent` must be four finite numbers .* got \(1, 0, 0, 1\)"),
        (lambda: plot.density_grid(lambda x: x[:, 0], extent=(0, 1, 0)), ValueError,
         r"`extent` .* got \(0, 1, 0\)"),
        (lambda: plot.density_grid(lambda x: x[:, 0], extent=(0, 1, 2, 2)), ValueError,
         "ymin < ymax"),
        (lambda: plot.density_grid(lambda x: x[:, 0], extent="abcd"), ValueError, "`extent`"),
        (lambda: plot.density_grid(lambda x: x[:, 0], resolution=1), ValueError,
         r"`resolution` must be an integer >= 2, got 1"),
        (lambda: plot.density_grid(lambda x: x, resolution=4), ValueError,
         r"returned shape \(16, 2\) for 16 points"),
        (lambda: plot.density(object()), TypeError, "log_prob"),
        (lambda: plot.loss({"val_loss": [1.0]}), ValueError, r"no 'loss' values.*\['val_loss'\]"),
        (lambda: plot.loss({"loss": [1.0], "val_loss": []}), ValueError, "0 'val_loss' values"),
        (lambda: plot.loss([1.0, 2.0]), TypeError, "`history` must be"),
        (lambda: plot.loss({"loss": [1.0]}, floor=float("nan")), ValueError, "`floor` must be"),
        (lambda: plot.stage_samples(object()), TypeError, "`model` must have"),
        (lambda: plot.density(lambda x: x[:, 0], vmax=0), ValueError,
         r"`vmax` must be a finite number > 0, got 0"),
        (lambda: plot.densities([]), ValueError, "`models` is empty"),
        (lambda: plot.densities([lambda x: x[:, 0]] * 2, titles=["a"]), ValueError,
         r"`titles` must hold one entry per model \(2\)"),
        (lambda: plot.densities([lambda x: x[:, 0]] * 2, axes=plt.subplots(1, 3)[1]),
         ValueError, r"`axes` must hold one entry per model \(2\)"),
        (lambda: plot.densities([lambda x: x[:, 0]] * 2, extent=[(0, 1, 0, 1)] * 3),
         ValueError, r"`extent` must hold one entry per model \(2\)"),
        (lambda: plot.densities([lambda x: x[:, 0]], extent=(1, 0, 0, 1)), ValueError,
         r"`extent` must be four finite numbers"),
        (lambda: plot.densities([lambda x: x[:, 0]], colorbar="below"), ValueError,
         r"`colorbar` must be one of \('right', 'left', 'top', 'bottom', None\), got 'below'"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_stage_samples_bad_n(fake_model):
    with pytest.raises(ValueError, match="`n` must be an integer >= 1, got 0"):
        plot.stage_samples(fake_model, n=0)
