import json
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

import nfbook
from nfbook import model_file
from nfbook.bijectors import permutations_of
from nfbook.permutations import legacy_permutations

from invariants import BUILDERS

tfb = tfp.bijectors
tfd = tfp.distributions


def trained_model(builder, batch_norm):
    flow = (nfbook.affine([0.5, -0.5], [2.0, 0.5]) if builder == "affine" else
            getattr(nfbook, builder)(2, hidden_units=(16, 16), num_layers=2,
                                     batch_norm=batch_norm))
    model = nfbook.FlowModel(flow, ndim=2)
    if model.trainable_variables:
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(nfbook.data.moons(512), epochs=2, batch_size=64, verbose=0)
    return model


CASES = [(b, bn) for b in BUILDERS for bn in (False, True) if not (b == "affine" and bn)]


@pytest.mark.parametrize("builder, batch_norm", CASES)
def test_save_and_load_round_trip(builder, batch_norm, tmp_path):
    model = trained_model(builder, batch_norm)
    path = tmp_path / "flow.nfbook"
    model.save(path)
    loaded = nfbook.load(path)
    x = nfbook.data.moons(300, seed=5)
    assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-6
    for saved, restored in zip(model_file.flow_weights(model), model_file.flow_weights(loaded)):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    if model.optimizer is not None:
        assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
        for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        loaded.fit(x, epochs=1, verbose=0)  # training resumes


def test_load_rejects_a_file_that_is_not_a_model(tmp_path):
    text = tmp_path / "notes.nfbook"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a readable nfbook model file"):
        nfbook.load(text)
    other_zip = tmp_path / "other.nfbook"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("something.txt", "x")
    with pytest.raises(ValueError, match="is not a readable nfbook model file"):
        nfbook.load(other_zip)
    with pytest.raises(FileNotFoundError):
        nfbook.load(tmp_path / "missing.nfbook")


def test_load_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "flow.nfbook"
    trained_model("maf", False).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a readable nfbook model file"):
        nfbook.load(path)


def test_custom_flows_need_their_bijector_and_a_wrong_one_is_refused(tmp_path):
    def custom():
        return tfb.Chain([tfb.Shift([1.0, 0.0]), nfbook.realnvp(2, hidden_units=(8,))])

    model = nfbook.FlowModel(custom(), ndim=2)
    model.compile()
    model.fit(nfbook.data.moons(256), epochs=1, verbose=0)
    path = tmp_path / "custom.nfbook"
    model.save(path)
    with pytest.raises(ValueError, match="pass `bijector=`"):
        nfbook.load(path)
    loaded = nfbook.load(path, bijector=custom())
    x = nfbook.data.moons(50, seed=3)
    assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-6
    wrong_shift = tfb.Chain([tfb.Shift([0.0, 0.0]), nfbook.realnvp(2, hidden_units=(8,))])
    with pytest.raises(ValueError, match="does not reproduce its saved log-densities"):
        nfbook.load(path, bijector=wrong_shift)
    with pytest.raises(ValueError, match="variables do not match"):
        nfbook.load(path, bijector=nfbook.realnvp(2, hidden_units=(16,)))


def test_save_never_destroys_an_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "flow.nfbook"
    model = trained_model("realnvp", False)
    model.save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        model.save(path, overwrite=False)

    def broken_writestr(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken_writestr)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.nfbook"]


def test_the_state_of_a_legacy_optimizer_is_saved_and_restored(tmp_path):
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), num_layers=1), ndim=2)
    model.compile(optimizer=keras.optimizers.legacy.Adam(1e-2))
    model.fit(nfbook.data.moons(256), epochs=1, batch_size=64, verbose=0)
    model.save(tmp_path / "flow.nfbook")
    loaded = nfbook.load(tmp_path / "flow.nfbook")
    saved, restored = model.optimizer.variables(), loaded.optimizer.variables()
    assert len(restored) == len(saved) > 1 + len(model.trainable_variables)
    for a, b in zip(saved, restored):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(loaded.optimizer.iterations) == 4


def rewrite_optimizer_state(path, arrays_to_add):
    """Rewrite a saved file with extra optimizer arrays, as a file whose optimizer state no
    longer fits the optimizer that `load` rebuilds."""
    record, arrays = model_file.read_model_file(path)
    count = record["optimizer_weights"]
    for i, array in enumerate(arrays_to_add):
        arrays[f"o{count + i}"] = array
    record["optimizer_weights"] = count + len(arrays_to_add)
    model_file._write(path, record, arrays)


def test_an_optimizer_state_that_does_not_fit_is_reported_and_the_weights_still_load(tmp_path):
    model = trained_model("maf", False)
    path = tmp_path / "flow.nfbook"
    model.save(path)
    rewrite_optimizer_state(path, [np.zeros(3, np.float32)])
    with pytest.warns(RuntimeWarning, match=r"optimizer state \(\d+ arrays\) does not fit"):
        loaded = nfbook.load(path)
    x = nfbook.data.moons(100, seed=3)
    assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-6
    assert int(loaded.optimizer.iterations) == 0 < int(model.optimizer.iterations)


@pytest.mark.parametrize("adam", [keras.optimizers.Adam, keras.optimizers.legacy.Adam])
def test_a_model_saved_before_training_loads_without_a_warning(adam, tmp_path):
    model = nfbook.FlowModel(nfbook.maf(2, hidden_units=(8,), num_layers=1), ndim=2)
    model.compile(optimizer=adam(1e-2))
    model.save(tmp_path / "flow.nfbook")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = nfbook.load(tmp_path / "flow.nfbook")
    assert not [w for w in caught if "optimizer state" in str(w.message)]
    assert int(loaded.optimizer.iterations) == 0
    loaded.fit(nfbook.data.moons(256), epochs=1, batch_size=64, verbose=0)
    assert int(loaded.optimizer.iterations) == 4


def exp_flow():
    return tfb.Chain([tfb.Exp(), nfbook.realnvp(2, hidden_units=(8,))])


def test_a_flow_with_a_restricted_support_saves_and_loads(tmp_path):
    model = nfbook.FlowModel(exp_flow(), ndim=2)
    path = tmp_path / "exp.nfbook"
    model.save(path)
    record, _ = model_file.read_model_file(path)
    assert np.all(np.asarray(record["probe_points"]) > 0)  # drawn inside the support
    assert np.all(np.isfinite(record["probe_log_prob"]))
    loaded = nfbook.load(path, bijector=exp_flow())
    x = model.sample(100, seed=(1, 2))
    np.testing.assert_allclose(loaded.log_prob(x), model.log_prob(x), rtol=1e-6)


def test_probe_points_scored_nan_at_save_still_load_and_a_nan_elsewhere_is_refused(tmp_path):
    model = nfbook.FlowModel(exp_flow(), ndim=2)
    path = tmp_path / "exp.nfbook"
    model.save(path)
    record, arrays = model_file.read_model_file(path)
    points = np.asarray(record["probe_points"], np.float32)
    points[:3] = -1.0  # outside the support: NaN
    record["probe_points"] = points.tolist()
    record["probe_log_prob"] = model_file.score(model, points).tolist()
    assert np.isnan(record["probe_log_prob"][:3]).all()
    model_file._write(path, record, arrays)
    nfbook.load(path, bijector=exp_flow())
    record["probe_log_prob"][5] = float("nan")
    model_file._write(path, record, arrays)
    with pytest.raises(ValueError, match="at 1 of 64 probe points"):
        nfbook.load(path, bijector=exp_flow())


def test_the_variables_of_a_trainable_base_are_saved_and_restored(tmp_path):
    def base(loc=(0.0, 0.0)):
        return tfd.MultivariateNormalDiag(loc=tf.Variable(loc, dtype=tf.float32))

    model = nfbook.FlowModel(nfbook.realnvp(2, hidden_units=(8,)), ndim=2, base=base())
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(nfbook.data.moons(256), epochs=1, batch_size=64, verbose=0)
    model.distribution.distribution.loc.assign([1.0, -2.0])
    path = tmp_path / "flow.nfbook"
    model.save(path)
    fresh = base()
    loaded = nfbook.load(path, base=fresh)
    np.testing.assert_array_equal(fresh.loc.numpy(), [1.0, -2.0])
    x = nfbook.data.moons(100, seed=3)
    assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-6
    loaded.fit(x, epochs=1, verbose=0)  # training resumes, the base's loc included
    with pytest.raises(ValueError, match=r"base passed in \(MultivariateNormalDiag .*shapes "
                                         r"\[\[1, 2\]\], the file has 1 with shapes \[\[2\]\]"):
        nfbook.load(path, base=base([[0.0, 0.0]]))
    with pytest.raises(ValueError, match="Pass a base built the same way"):
        nfbook.load(path, base=tfd.MultivariateNormalDiag(
            loc=tf.Variable([0.0, 0.0]), scale_diag=tf.Variable([1.0, 1.0])))


def file_mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_saved_file_has_the_mode_of_a_plain_write(tmp_path):
    model = nfbook.FlowModel(nfbook.affine([0.5, -0.5], [2.0, 0.5]), ndim=2)
    umask = os.umask(0o022)  # where a plain write gives 0o644, and mkstemp 0o600
    try:
        with open(tmp_path / "plain", "wb") as file:
            file.write(b"x")
        model.save(tmp_path / "flow.nfbook")
    finally:
        os.umask(umask)
    assert file_mode(tmp_path / "flow.nfbook") == file_mode(tmp_path / "plain") == 0o644
    os.chmod(tmp_path / "flow.nfbook", 0o640)
    model.save(tmp_path / "flow.nfbook")  # overwriting keeps the file's mode, as open() does
    assert file_mode(tmp_path / "flow.nfbook") == 0o640


def test_save_syncs_the_file_to_disk_before_moving_it_into_place(tmp_path, monkeypatch):
    calls = []
    sync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), sync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda *a: (calls.append("replace"), replace(*a))[1])
    nfbook.FlowModel(nfbook.affine([0.5, -0.5], [2.0, 0.5]), ndim=2).save(tmp_path / "f")
    assert calls == ["fsync", "replace"]


def test_a_file_from_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "flow.nfbook"
    nfbook.FlowModel(nfbook.affine([0.5, -0.5], [2.0, 0.5]), ndim=2).save(path)
    record, arrays = model_file.read_model_file(path)
    record["format_version"] = 99
    model_file._write(path, record, arrays)
    with pytest.raises(ValueError, match="written by a newer nfbook .*version 99.*upgrade"):
        nfbook.load(path)


def test_a_file_of_format_version_1_still_loads(tmp_path):
    model = trained_model("maf", False)
    path = tmp_path / "flow.nfbook"
    model.save(path)
    record, arrays = model_file.read_model_file(path)
    del record["probe_points"], record["base_weights"]  # as version 1 wrote it
    record["format_version"] = 1
    record["probe_log_prob"] = model.log_prob(model_file.gaussian_probe_points(2)).numpy().tolist()
    model_file._write(path, record, arrays)
    loaded = nfbook.load(path)
    x = nfbook.data.moons(100, seed=3)
    assert np.max(np.abs(loaded.log_prob(x) - model.log_prob(x))) < 1e-6
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)


DATA = Path(__file__).resolve().parent / "data"
V010 = json.loads((DATA / "v010_log_prob.json").read_text())


@pytest.mark.parametrize("name", sorted(V010))
def test_files_saved_by_nfbook_0_1_0_load_to_the_same_model(name):
    # Written by tests/data/make_v010_files.py with nfbook 0.1.0, whose default permutations
    # were drawn from the seed: they must be rebuilt as they were, not with today's default.
    with zipfile.ZipFile(DATA / f"{name}.nfbook") as archive:
        record = json.loads(archive.read("model.json"))
    assert record["bijector"]["kwargs"]["permutation"] is None
    assert "permutation_scheme" not in record["bijector"]
    model = nfbook.load(DATA / f"{name}.nfbook")
    points = np.asarray(V010[name]["points"], dtype=np.float32)
    np.testing.assert_allclose(model.log_prob(points), V010[name]["log_prob"], rtol=1e-5,
                               atol=1e-5)
    kwargs = record["bijector"]["kwargs"]
    legacy = legacy_permutations(kwargs["ndim"], kwargs["num_layers"], kwargs["seed"])
    assert permutations_of(model.bijector) == [p.tolist() for p in legacy]
    if kwargs["ndim"] > 2:  # today's default differs, so the test shows the old one is used
        fresh = getattr(nfbook, record["bijector"]["builder"])(
            kwargs["ndim"], hidden_units=kwargs["hidden_units"])
        assert permutations_of(fresh) != permutations_of(model.bijector)


def test_a_resaved_file_of_0_1_0_records_its_permutations(tmp_path):
    model = nfbook.load(DATA / "v010_realnvp4.nfbook")
    model.save(tmp_path / "again.nfbook")
    with zipfile.ZipFile(tmp_path / "again.nfbook") as archive:
        record = json.loads(archive.read("model.json"))
    assert record["format_version"] == 3  # the newest format for an unconditional flow
    assert record["bijector"]["permutation_scheme"] == 2
    assert record["bijector"]["kwargs"]["permutation"] == permutations_of(model.bijector)
    x = np.asarray(V010["v010_realnvp4"]["points"], dtype=np.float32)
    np.testing.assert_allclose(nfbook.load(tmp_path / "again.nfbook").log_prob(x),
                               model.log_prob(x), rtol=1e-6, atol=1e-6)
