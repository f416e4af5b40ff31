import numpy as np
import pytest
import tensorflow as tf

from nfbook.checks import (
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
