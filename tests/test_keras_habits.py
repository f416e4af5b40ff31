"""Keras habits with FlowModel: checkpoints, the usual callbacks, summary(), seeds, and
Keras 3 objects refused by name."""

import csv
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook
from nfbook.keras_checks import check_model_path, check_tf_keras, is_keras3

DATA = nfbook.data.moons(256, seed=0)
HELD_OUT = nfbook.data.moons(128, seed=1)


def tiny_model(batch_norm=False, seed=0):
    flow = nfbook.maf(2, hidden_units=(8,), num_layers=2, batch_norm=batch_norm, seed=seed)
    model = nfbook.FlowModel(flow, ndim=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def fit(model, epochs=2, verbose=0, **kwargs):
    return model.fit(DATA, epochs=epochs, batch_size=64, validation_data=HELD_OUT,
                     verbose=verbose, **kwargs)


@pytest.mark.parametrize("name", ["best.nfbook", "epoch_{epoch}", "nll_{val_loss:.3f}.nfbook"])
def test_a_whole_model_checkpoint_is_a_file_that_nfbook_load_reads(tmp_path, name):
    model = tiny_model()
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / name))
    history = fit(model, callbacks=[checkpoint])
    files = sorted(glob.glob(str(tmp_path / "*")))
    assert len(files) == (1 if name == "best.nfbook" else 2)
    last = files[-1] if name != "nll_{val_loss:.3f}.nfbook" else str(
        tmp_path / name.format(val_loss=history.history["val_loss"][-1]))
    loaded = nfbook.load(last)
    np.testing.assert_allclose(loaded.log_prob(HELD_OUT), model.log_prob(HELD_OUT), rtol=1e-6)


def test_save_best_only_keeps_the_epoch_of_the_lowest_val_loss(tmp_path):
    model = tiny_model()
    path = str(tmp_path / "best.nfbook")
    history = fit(model, epochs=3, callbacks=[
        keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True)])
    nll = nfbook.load(path).evaluate(HELD_OUT, verbose=0)
    np.testing.assert_allclose(nll, min(history.history["val_loss"]), rtol=1e-5)


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".hdf5"])
def test_a_keras_file_name_is_refused_before_training(tmp_path, suffix):
    model = tiny_model()
    with pytest.raises(ValueError, match=rf"ends in \{suffix}.*Use a `.nfbook` name"):
        fit(model, callbacks=[keras.callbacks.ModelCheckpoint(str(tmp_path / f"m{suffix}"))])
    assert int(model.optimizer.iterations) == 0  # not a single step
    with pytest.raises(ValueError, match="nfbook.load"):
        model.save(tmp_path / f"m{suffix}")
    assert not os.listdir(tmp_path)


def test_save_takes_the_options_keras_passes_and_refuses_others(tmp_path):
    model = tiny_model()
    model.save(tmp_path / "m.nfbook", options=tf.saved_model.SaveOptions())
    assert nfbook.load(tmp_path / "m.nfbook").ndim == 2
    with pytest.raises(TypeError, match="save_format"):
        model.save(tmp_path / "n.nfbook", save_format="tf")
    with pytest.raises(TypeError, match="SaveOptions"):
        model.save(tmp_path / "n.nfbook", options="fast")


@pytest.mark.parametrize("name", ["weights", "w.weights.h5", "w.h5"])
def test_a_weights_checkpoint_loads_exactly_into_a_fresh_model(tmp_path, name):
    model = tiny_model(batch_norm=True)
    path = str(tmp_path / name)
    fit(model, callbacks=[keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
    fresh = tiny_model(batch_norm=True)
    assert not np.array_equal(fresh.log_prob(HELD_OUT), model.log_prob(HELD_OUT))
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.log_prob(HELD_OUT), model.log_prob(HELD_OUT))
    weights = model.trainable_weights + model.non_trainable_weights
    loaded = fresh.trainable_weights + fresh.non_trainable_weights
    assert len(loaded) == len(weights) > 0
    for mine, theirs in zip(loaded, weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_tensorboard_logs_the_loss_and_val_loss_of_every_epoch(tmp_path):
    model = tiny_model()
    fit(model, epochs=2, callbacks=[keras.callbacks.TensorBoard(str(tmp_path),
                                                                histogram_freq=1)])
    plugins = set()
    for run in ["train", "validation"]:
        steps = []
        for path in glob.glob(str(tmp_path / run / "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    plugins.add(value.metadata.plugin_data.plugin_name)
                    steps += [event.step] if value.tag == "epoch_loss" else []
        assert sorted(steps) == [0, 1], run
    assert "histograms" in plugins  # the weights' histograms (histogram_freq=1)


def test_csv_logger_writes_one_row_per_epoch_with_loss_and_val_loss(tmp_path):
    model = tiny_model()
    history = fit(model, epochs=2, callbacks=[keras.callbacks.CSVLogger(tmp_path / "log.csv")])
    with open(tmp_path / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["epoch", "loss", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    np.testing.assert_allclose([float(r["val_loss"]) for r in rows],
                               history.history["val_loss"], rtol=1e-6)


def test_early_stopping_stops_and_restores_the_best_weights():
    model = tiny_model()
    # min_delta so large that no epoch after the first counts as an improvement
    stop = keras.callbacks.EarlyStopping("val_loss", patience=1, min_delta=100.0,
                                         restore_best_weights=True)
    history = fit(model, epochs=5, callbacks=[stop])
    assert history.epoch == [0, 1] and stop.stopped_epoch == 1
    np.testing.assert_allclose(model.evaluate(HELD_OUT, verbose=0),
                               history.history["val_loss"][0], rtol=1e-5)


def test_early_stopping_on_the_training_loss():
    model = tiny_model()
    history = fit(model, epochs=5, callbacks=[
        keras.callbacks.EarlyStopping("loss", patience=0, min_delta=100.0)])
    assert history.epoch == [0, 1]


def test_reduce_lr_on_plateau_lowers_the_learning_rate():
    model = tiny_model()
    history = fit(model, epochs=3, callbacks=[keras.callbacks.ReduceLROnPlateau(
        "val_loss", factor=0.5, patience=0, min_delta=100.0)])
    np.testing.assert_allclose(history.history["lr"], [1e-3, 1e-3, 5e-4])
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 2.5e-4)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_summary_counts_the_parameters_that_count_params_counts(batch_norm):
    model = tiny_model(batch_norm=batch_norm)
    fit(model, epochs=1)  # the weight average and the metrics now hold values
    lines = []
    model.summary(print_fn=lines.append)

    def count(label):
        line = next(line for line in lines if line.startswith(label))
        return int(line[len(label):].split()[0].replace(",", ""))

    trainable = sum(v.shape.num_elements() for v in model.trainable_variables)
    statistics = sum(v.shape.num_elements() for v in model.bijector.variables
                     if "moving" in v.name)
    assert (statistics > 0) == batch_norm
    assert count("Total params:") == model.count_params() == trainable + statistics
    assert count("Trainable params:") == trainable
    assert count("Non-trainable params:") == statistics


def test_the_progress_bar_shows_the_losses_and_nothing_always_zero(capsys):
    model = tiny_model()
    history = fit(model, epochs=2, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if " - loss: " in line]
    assert len(lines) == 2
    assert all("val_loss: " in line and "skipped" not in line for line in lines)
    assert sorted(history.history) == ["loss", "val_loss"]


def test_an_int_seed_gives_the_same_samples_at_every_call():
    model = tiny_model()
    first = model.sample(50, seed=7)
    np.testing.assert_array_equal(model.sample(50, seed=7), first)
    np.testing.assert_array_equal(model.sample(50, seed=np.int64(7)), first)
    assert not np.array_equal(model.sample(50, seed=8), first)
    assert not np.array_equal(model.sample(50, seed=2**40 + 7), first)
    assert not np.array_equal(model.sample(50), model.sample(50))  # None: fresh draws


def test_keras3_optimizers_metrics_and_callbacks_are_refused_by_name():
    model = tiny_model()
    with pytest.raises(TypeError, match=r"`optimizer` is a Keras 3 object \(Adam from "
                                        r"`keras.optimizers`.*import tf_keras as keras`, then "
                                        r"`keras.optimizers.Adam\(...\)`"):
        model.compile(optimizer=tf.keras.optimizers.Adam())
    with pytest.raises(TypeError, match="`metrics` is a Keras 3 object"):
        model.compile(metrics=[tf.keras.metrics.Mean()])
    model.compile()
    for callback in [tf.keras.callbacks.EarlyStopping(), tf.keras.callbacks.CSVLogger("x"),
                     tf.keras.callbacks.ModelCheckpoint("x.keras")]:
        name = type(callback).__name__
        with pytest.raises(TypeError, match=rf"`callbacks` is a Keras 3 object \({name}.*"
                                            rf"keras.callbacks.{name}"):
            fit(model, callbacks=[callback])
    assert int(model.optimizer.iterations) == 0
    fit(model, epochs=1)  # and the model is still usable


def test_keras3_data_and_layers_are_refused_by_name():
    class Batches(tf.keras.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return DATA

    model = tiny_model()
    with pytest.raises(TypeError, match=r"`x` is a Keras 3 object \(Batches.*tf_keras"):
        model.fit(Batches(), verbose=0)
    layer = tf.keras.layers.Dense(3)
    assert is_keras3(layer) and not is_keras3(keras.layers.Dense(3))
    with pytest.raises(TypeError, match=r"`network` is a Keras 3 object \(Dense from "
                                        r"`keras.layers`.*keras.layers.Dense"):
        check_tf_keras(layer, "network")


def test_check_model_path_takes_any_other_name():
    assert check_model_path("model") == "model"
    assert check_model_path(os.path.join("a.keras", "m.nfbook")).endswith("m.nfbook")
    with pytest.raises(ValueError, match=r"`filepath` 'M.KERAS' ends in \.keras"):
        check_model_path("M.KERAS")


@pytest.mark.filterwarnings("ignore:`tf.layers.dense` is deprecated:UserWarning")
def test_a_tf1_template_network_is_not_tracked_by_a_keras_model():
    """Chapter 7's claim: TFP's ``real_nvp_default_template`` keeps its variables in a
    ``tf.compat.v1.make_template``, so a Keras model around it lists none of them and ``fit``
    would not train them."""
    template = tfp.bijectors.real_nvp_default_template([8])
    flow = tfp.bijectors.RealNVP(num_masked=1, shift_and_log_scale_fn=template)
    model = nfbook.FlowModel(flow, ndim=2)
    model.log_prob(np.zeros((4, 2), np.float32))  # the template makes its variables here
    assert len(template.trainable_variables) > 0
    assert len(model.trainable_variables) == 0
