import numpy as np
import pytest
import tensorflow as tf

import nfbook
from nfbook.checks import (
    check_activation,
    check_data,
    check_hidden_units,
    check_permutation,
    check_positive_int,
    check_real,
)


def test_check_data_converts_and_keeps_values():
    out = check_data(tf.constant([[1, 2], [3, 4]]), ndim=2)
    assert out.dtype == np.float32 and out.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros((3, 1)), ValueError, r"shape \(3, 1\); expected \(n, 2\)"),
        (np.zeros((2, 2, 2)), ValueError, r"shape \(2, 2, 2\)"),
        (np.zeros((0, 2)), ValueError, "is empty"),
        (np.array([[1 + 1j, 0]]), TypeError, "real numbers, got dtype complex128"),
        (np.array([[None, 1]]), TypeError, "got dtype object"),
        (np.array([[np.nan, 1.0], [0.0, 0.0]]), ValueError, "1 row\\(s\\) with NaN"),
    ],
)
def test_check_data_errors(x, error, match):
    with pytest.raises(error, match=match):
        check_data(x, ndim=2)


def test_check_positive_int():
    assert check_positive_int("n", np.int64(4)) == 4
    with pytest.raises(TypeError, match="`n` must be an integer, got True"):
        check_positive_int("n", True)
    with pytest.raises(ValueError, match="`n` must be an integer >= 1, got -1"):
        check_positive_int("n", -1)


def test_check_real():
    assert check_real("a", np.float32(0.5)) == 0.5 and type(check_real("a", np.int64(2))) is float
    assert check_real("a", 0) == 0.0
    with pytest.raises(ValueError, match=r"`a` must be a finite number > 0, got 0"):
        check_real("a", 0, positive=True)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"`a` must be a finite number >= 0"):
            check_real("a", bad)
    for bad in (True, "1", 1j, np.complex64(1), None):
        with pytest.raises(TypeError, match="`a` must be a real number"):
            check_real("a", bad)


def test_check_hidden_units():
    with pytest.raises(TypeError, match="sequence of positive integers"):
        check_hidden_units("128")
    with pytest.raises(ValueError, match="is empty"):
        check_hidden_units([])


@pytest.mark.parametrize("perm", [[0, 1, 1], [0, 1], [0.0, 1.0, 2.0], [[0, 1, 2]], [0, 1, 3]])
def test_check_permutation_errors(perm):
    with pytest.raises(ValueError, match="Invalid permutation"):
        check_permutation(perm, 3)


def test_check_data_takes_dataframes_with_missing_values_as_nan():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3, None]}).astype("Float64")
    with pytest.raises(ValueError, match="`x` has 1 row\\(s\\) with NaN"):
        check_data(frame, ndim=2)
    assert check_data(frame.iloc[:1], ndim=2).tolist() == [[1.0, 3.0]]


def test_check_activation_takes_keras_names_callables_and_none():
    assert check_activation("swish") == "swish"
    assert check_activation(tf.nn.relu) is tf.nn.relu
    assert check_activation(None) is None
    with pytest.raises(ValueError, match="`activation` 'rleu' is not a Keras activation; "
                                         "expected one of .*relu.*Did you mean 'relu'\\?"):
        check_activation("rleu")
    with pytest.raises(TypeError, match="`activation` must be the name of a Keras activation "
                                        "or a callable, got 3"):
        check_activation(3)


@pytest.mark.parametrize("builder", ["maf", "iaf", "realnvp", "nice"])
def test_every_builder_checks_activation_when_called(builder):
    with pytest.raises(ValueError, match="`activation` 'tanhh' is not a Keras activation.*"
                                         "Did you mean 'tanh'"):
        getattr(nfbook, builder)(2, hidden_units=(4,), activation="tanhh")
    flow = getattr(nfbook, builder)(2, hidden_units=(4,), num_layers=1, activation="elu")
    assert nfbook.FlowModel(flow, ndim=2).count_params() > 0


def test_the_networks_check_activation_and_take_callables():
    from nfbook.networks import AutoregressiveAffine, CouplingAffine

    for network in (AutoregressiveAffine, CouplingAffine):
        with pytest.raises(ValueError, match="`activation` 'rleu'"):
            network(2, hidden_units=(4,), activation="rleu")
        assert network(2, hidden_units=(4,), activation=tf.nn.elu).hidden_units == (4,)
