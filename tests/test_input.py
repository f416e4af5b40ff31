"""Input outside NumPy float32: lists, DataFrames, float64, tensors and tf.data sets, checked
with clear errors."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras as keras

import nfbook
from nfbook.inputs import check_dataset

DATA = nfbook.data.moons(256, seed=0).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    flow = nfbook.maf(2, hidden_units=(8,), num_layers=2)
    model = nfbook.FlowModel(flow, ndim=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def with_nan(rows=(200, 201)):
    data = DATA.copy()
    data[rows[0], 1] = np.nan
    data[rows[1], 0] = np.inf
    return data


def batches(data, size=32):
    return tf.data.Dataset.from_tensor_slices(data).batch(size)


def ragged_width(width):
    return tf.data.Dataset.from_generator(
        lambda: iter([np.zeros((8, width), np.float32)]),
        output_signature=tf.TensorSpec([None, None], tf.float32))


FORMS = {
    "list": lambda x: x.tolist(),
    "float64": lambda x: x.astype(np.float64),
    "tensor": lambda x: tf.constant(x, tf.float64),
    "DataFrame": lambda x: pd.DataFrame(x, columns=["a", "b"]),
    "nullable DataFrame": lambda x: pd.DataFrame(x, columns=["a", "b"]).astype("Float64"),
    "batched float64 data set": lambda x: batches(x.astype(np.float64), 50),
    "unbatched data set": lambda x: tf.data.Dataset.from_tensor_slices(x),
    "(x,) data set": lambda x: tf.data.Dataset.from_tensor_slices((x,)).batch(64),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_form_of_data_scores_as_its_float32_array(model, form):
    expected = model.evaluate(DATA, verbose=0)
    data = FORMS[form](DATA)
    np.testing.assert_allclose(model.evaluate(data, batch_size=64, verbose=0), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(model.predict(data, verbose=0), model.log_prob(DATA), rtol=1e-5)


def test_integer_data_is_taken_as_float(model):
    points = np.array([[0, 1], [2, -1]])
    np.testing.assert_allclose(model.predict(points, verbose=0),
                               model.log_prob(points.astype(np.float32)), rtol=1e-6)
    np.testing.assert_allclose(model.predict(batches(points), verbose=0),
                               model.log_prob(points.astype(np.float32)), rtol=1e-6)


@pytest.mark.parametrize("form", ["list", "DataFrame", "unbatched data set"])
def test_every_form_of_data_trains(form):
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), num_layers=2), ndim=2)
    model.compile()
    history = model.fit(FORMS[form](DATA), epochs=1, batch_size=64,
                        validation_data=FORMS[form](DATA[:64]), verbose=0)
    assert np.isfinite(history.history["val_loss"]).all()
    assert int(model.optimizer.iterations) == 4  # 256 points in batches of 64


def test_an_unbatched_data_set_is_batched_by_batch_size():
    points = tf.data.Dataset.from_tensor_slices(DATA)
    assert check_dataset(points, 2, batch_size=100).cardinality() == 3
    assert check_dataset(points, 2).cardinality() == 8  # Keras's default batch size, 32


@pytest.mark.parametrize("form, data, match", [
    ("array", np.zeros((10, 3)), r"`x` has shape \(10, 3\); expected \(n, 2\).*got 3 columns"),
    ("list", [[0.0, 1.0, 2.0]], r"`x` has shape \(1, 3\); expected \(n, 2\).*got 3 columns"),
    ("DataFrame", pd.DataFrame(np.zeros((4, 3))), r"shape \(4, 3\).*got 3 columns"),
    ("ragged list", [[0.0, 1.0], [2.0]], "`x` is not a rectangular array"),
    ("data set", batches(np.zeros((10, 3))),
     r"`x` \(a tf.data.Dataset\) yields elements of shape \(None, 3\); expected 2 columns, "
     "one per coordinate of this flow, got 3"),
    ("unbatched data set", tf.data.Dataset.from_tensor_slices(np.zeros((10, 3))),
     r"shape \(3,\); expected 2 columns.*got 3"),
    ("data set of rank 3", batches(np.zeros((10, 2, 2))), r"shape \(None, 2, 2\)"),
    ("data set of unknown width", ragged_width(3),
     r"`x` \(a tf.data.Dataset\) yields a batch of shape \(8, 3\) in batch 1 of epoch 1; "
     r"expected \(batch, 2\): 2 columns, one per coordinate of this flow, got 3"),
])
def test_the_wrong_width_is_reported_in_every_form(model, form, data, match):
    with pytest.raises(ValueError, match=match):
        model.fit(data, epochs=1, verbose=0)


@pytest.mark.parametrize("data, match", [
    (np.array([["a", "b"]]), "must hold real numbers, got dtype <U1"),
    (np.array([[True, False]]), "must hold real numbers, got dtype bool"),
    (pd.DataFrame({"a": [1.0], "b": ["x"]}), r"non-numeric column\(s\) \['b'\]"),
    (tf.data.Dataset.from_tensor_slices([["a", "b"]]), r"yields dtype string; expected real"),
    (tf.data.Dataset.from_tensor_slices({"x": DATA}), "yields {'x'.*expected tensors of points"),
])
def test_the_wrong_dtype_is_a_type_error(model, data, match):
    with pytest.raises(TypeError, match=match):
        model.fit(data, epochs=1, verbose=0)


def test_nan_in_a_data_set_is_reported_at_its_batch_not_as_a_learning_rate_problem():
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), num_layers=2), ndim=2)
    model.compile()
    with pytest.raises(ValueError, match=r"`x` \(a tf.data.Dataset\) holds NaN or infinite "
                                         r"values: 2 of the 32 rows of batch 7 of epoch 1\."):
        model.fit(batches(with_nan()), epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 6  # the six batches before it
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    passes = []

    def clean_then_nan():  # a clean first epoch, NaN in the second
        passes.append(1)
        yield from (DATA if len(passes) == 1 else with_nan()).reshape(8, 32, 2)

    data = tf.data.Dataset.from_generator(
        clean_then_nan, output_signature=tf.TensorSpec([32, 2], tf.float32))
    with pytest.raises(ValueError, match="2 of the 32 rows of batch 7 of epoch 2"):
        model.fit(data, epochs=3, verbose=0)


def test_nan_in_validation_data_names_validation_data_and_the_epoch():
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), num_layers=2), ndim=2)
    model.compile()
    with pytest.raises(ValueError, match=r"`validation_data` \(a tf.data.Dataset\) holds NaN "
                                         r"or infinite values: 1 of the 32 rows of batch 2 "
                                         r"of epoch 1"):
        model.fit(DATA, epochs=2, validation_data=batches(with_nan((40, 40))), verbose=0)
    with pytest.raises(ValueError, match="`validation_data` has 2 row"):
        model.fit(DATA, epochs=1, validation_data=with_nan(), verbose=0)
    # a later fit does not reuse the failed fit's validation data
    history = model.fit(DATA, epochs=1, validation_data=DATA[:64], verbose=0)
    np.testing.assert_allclose(history.history["val_loss"],
                               model.evaluate(DATA[:64], verbose=0), rtol=1e-5)


def test_nan_in_a_data_set_given_to_evaluate_or_predict_names_the_batch(model):
    for method in (model.evaluate, model.predict):
        with pytest.raises(ValueError, match=r"`x` \(a tf.data.Dataset\) holds NaN or "
                                             r"infinite values: 2 of the 32 rows of batch 7\."):
            method(batches(with_nan()), verbose=0)
