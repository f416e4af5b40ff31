from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow_probability as tfp
from matplotlib.animation import FuncAnimation

import nfbook
from nfbook.animation import flow_animation, stage_frames

matplotlib.use("Agg")  # before any figure is made; pyplot may already be imported
tfb, tfd = tfp.bijectors, tfp.distributions
pytestmark = [pytest.mark.usefixtures("close_figures"),
              pytest.mark.filterwarnings("ignore:Animation was deleted without rendering")]


@pytest.fixture
def fake_model():
    # Three stages after the base (the Permute is applied but not recorded).
    chain = tfb.Chain([tfb.Shift([1.0, 2.0]), tfb.Permute([1, 0]), tfb.Scale([2.0, 3.0]),
                       tfb.Exp()])
    base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0])
    return SimpleNamespace(distribution=tfd.TransformedDistribution(base, chain), bijector=chain)


def test_frame_count_and_titles(fake_model):
    frames, titles = stage_frames(fake_model, n=20, frames_per_stage=5, seed=3)
    stages = nfbook.plot.stage_samples(fake_model, 20, seed=3)
    assert len(stages) == 4
    assert frames.shape == (3 * 5 + 1, 20, 2) and frames.dtype == np.float32
    assert len(titles) == len(frames)
    assert [titles[5 * k] for k in range(4)] == [label for label, _ in stages]
    assert titles[1] == f"base -> {stages[1][0]}"


def test_first_frame_is_base_and_last_is_model_sample(fake_model):
    frames, _ = stage_frames(fake_model, n=64, frames_per_stage=4, seed=7)
    base = fake_model.distribution.distribution.sample(64, seed=(0, 7))
    np.testing.assert_allclose(frames[0], base, rtol=1e-6)
    np.testing.assert_allclose(frames[-1], fake_model.distribution.sample(64, seed=(0, 7)),
                               rtol=1e-5)


def test_frames_interpolate_linearly_between_stages(fake_model):
    m = 4
    frames, _ = stage_frames(fake_model, n=32, frames_per_stage=m)
    stages = [x for _, x in nfbook.plot.stage_samples(fake_model, 32)]
    for k in range(len(stages) - 1):
        np.testing.assert_allclose(frames[k * m], stages[k], rtol=1e-5, atol=1e-6)
        for j in range(1, m):
            expected = stages[k] + j / m * (stages[k + 1] - stages[k])
            np.testing.assert_allclose(frames[k * m + j], expected, rtol=1e-5, atol=1e-5)


def test_one_frame_per_stage(fake_model):
    frames, titles = stage_frames(fake_model, n=8, frames_per_stage=1)
    assert frames.shape == (4, 8, 2) and "->" not in "".join(titles)


def test_animation_frames_draw_the_stages(fake_model):
    anim = flow_animation(fake_model, n=40, frames_per_stage=3, seed=1)
    assert isinstance(anim, FuncAnimation)
    assert len(list(anim.new_frame_seq())) == 3 * 3 + 1
    frames, titles = stage_frames(fake_model, n=40, frames_per_stage=3, seed=1)
    ax = anim._fig.axes[0]
    scatter = ax.collections[0]
    np.testing.assert_allclose(scatter.get_offsets(), frames[0])  # before any update
    anim._func(len(frames) - 1)  # the update function FuncAnimation calls for a frame
    np.testing.assert_allclose(scatter.get_offsets(), frames[-1])
    assert ax.get_title() == titles[-1]
    html = anim.to_jshtml()
    assert html.count("data:image/png;base64") == len(frames)


def test_new_figure_is_closed_and_given_axes_are_used(fake_model):
    anim = flow_animation(fake_model, n=10, frames_per_stage=2)
    assert anim._fig.number not in plt.get_fignums()
    fig, ax = plt.subplots()
    anim = flow_animation(fake_model, n=10, frames_per_stage=2, ax=ax,
                          extent=(-5, 5, -4, 4))
    assert anim._fig is fig and len(ax.collections) == 1
    assert tuple(ax.get_xlim()) == (-5, 5) and tuple(ax.get_ylim()) == (-4, 4)


def test_auto_extent_holds_every_stage(fake_model):
    anim = flow_animation(fake_model, n=500, frames_per_stage=2)
    ax = anim._fig.axes[0]
    frames, _ = stage_frames(fake_model, n=500, frames_per_stage=2)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for frame in frames:
        inside = ((frame[:, 0] > x0) & (frame[:, 0] < x1) & (frame[:, 1] > y0)
                  & (frame[:, 1] < y1))
        assert inside.mean() > 0.98


def test_works_on_a_trained_flow_model():
    nfbook.set_seed(0)
    model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(8,), num_layers=2), ndim=2)
    model.compile()
    model.fit(nfbook.data.moons(256), epochs=1, batch_size=128, verbose=0)
    frames, titles = stage_frames(model, n=30, frames_per_stage=2, seed=0)
    assert titles[0] == "base" and titles[-1] == "realnvp_1 [0]"
    np.testing.assert_allclose(frames[-1], model.sample(30, seed=(0, 0)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, word", [
    ({"n": 0}, ValueError, "`n`"),
    ({"n": 2.5}, TypeError, "`n`"),
    ({"frames_per_stage": 0}, ValueError, "`frames_per_stage`"),
    ({"frames_per_stage": "8"}, TypeError, "`frames_per_stage`"),
    ({"seed": -1}, ValueError, "`seed`"),
    ({"extent": (1, 0, 0, 1)}, ValueError, "`extent`"),
    ({"extent": (0, 1, 0)}, ValueError, "`extent`"),
    ({"interval": 0}, ValueError, "`interval`"),
    ({"ax": "axes"}, TypeError, "`ax`"),
])
def test_bad_arguments_are_refused_with_their_name(fake_model, kwargs, error, word):
    with pytest.raises(error, match=word):
        flow_animation(fake_model, **kwargs)


def test_bad_models_are_refused():
    with pytest.raises(TypeError, match="`model`"):
        stage_frames(object())
    chain = tfb.Scale([2.0, 3.0, 4.0])
    base = tfd.MultivariateNormalDiag(loc=[0.0, 0.0, 0.0])
    model = SimpleNamespace(distribution=tfd.TransformedDistribution(base, chain), bijector=chain)
    with pytest.raises(ValueError, match="2-D"):
        stage_frames(model)
