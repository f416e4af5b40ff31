import time

import numpy as np
import pytest
import tensorflow as tf

from nfbook.timing import Timing, time_calls


def test_calls_are_warmed_up_then_interleaved():
    log = []
    functions = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    timings = time_calls(functions, repeats=3, warmup=2)
    assert log == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "c"] * 3
    assert list(timings) == ["a", "b", "c"]
    assert all(isinstance(t, Timing) and len(t.seconds) == 3 for t in timings.values())


def test_best_and_median_of_known_durations():
    durations = iter([0.0, 0.03, 0.01, 0.02])  # warm-up call first, then three rounds
    timings = time_calls({"sleep": lambda: time.sleep(next(durations))}, repeats=3, warmup=1)
    t = timings["sleep"]
    assert t.best == min(t.seconds) and t.median == float(np.median(t.seconds))
    assert 0.01 <= t.best < 0.02 <= t.median < 0.03
    assert t.seconds[0] > t.seconds[1]  # rounds keep their order


def test_slower_function_measures_slower():
    timings = time_calls({"fast": lambda: None, "slow": lambda: time.sleep(0.005)}, repeats=3)
    assert timings["slow"].best >= 0.005 > timings["fast"].best


def test_waits_for_tensor_results():
    class Pending:
        """Stands for a tensor whose value takes a while to arrive."""

        def numpy(self):
            time.sleep(0.01)
            return 0.0

    timings = time_calls({"nested": lambda: {"x": [Pending(), tf.constant(1.0)]}}, repeats=2)
    assert timings["nested"].best >= 0.01


def test_tuple_labels_keep_their_order():
    timings = time_calls({("maf", 2): lambda: None, ("iaf", 2): lambda: None}, repeats=1)
    assert list(timings) == [("maf", 2), ("iaf", 2)]


def test_tf_function_traced_in_warmup():
    traces = []

    @tf.function
    def f(x):
        traces.append(1)
        return x * 2.0

    x = tf.ones([4])
    time_calls({"f": lambda: f(x)}, repeats=4, warmup=1)
    assert len(traces) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"functions": {}}, ValueError, "empty"),
        ({"functions": [lambda: None]}, TypeError, "mapping"),
        ({"functions": {"a": 3}}, TypeError, "functions\\['a'\\]"),
        ({"functions": {"a": lambda: None}, "repeats": 0}, ValueError, "repeats"),
        ({"functions": {"a": lambda: None}, "repeats": 2.0}, TypeError, "repeats"),
        ({"functions": {"a": lambda: None}, "warmup": -1}, ValueError, "warmup"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        time_calls(**kwargs)
