"""Write the model files of nfbook 0.1.0 that tests/test_saving.py loads with today's nfbook.

Run from the repository root against a checkout of nfbook 0.1.0 (git commit 8c9f2c4):

    git worktree add /tmp/nfbook-0.1.0 8c9f2c4
    PYTHONPATH=/tmp/nfbook-0.1.0 python tests/data/make_v010_files.py

Each model is a default-permutation flow trained for a few steps on a correlated Gaussian;
``v010_log_prob.json`` holds its log-densities at fixed points, computed by nfbook 0.1.0.
"""

import json
import os
from pathlib import Path

import numpy as np
import tf_keras as keras

import nfbook

HERE = Path(__file__).resolve().parent
CASES = {
    "v010_maf3": ("maf", 3, {}),
    "v010_iaf3": ("iaf", 3, {}),
    "v010_realnvp4": ("realnvp", 4, {}),
    "v010_nice4": ("nice", 4, {}),
    "v010_realnvp5_seed7_bn": ("realnvp", 5, {"seed": 7, "batch_norm": True}),
}


def main() -> None:
    if nfbook.__version__ != "0.1.0":
        raise SystemExit(f"run against nfbook 0.1.0, got {nfbook.__version__}")
    values = {}
    for name, (builder, ndim, kwargs) in CASES.items():
        nfbook.set_seed(1)
        rng = np.random.default_rng(ndim)
        mixing = rng.normal(size=(ndim, ndim))
        x = (rng.normal(size=(512, ndim)) @ mixing.T).astype(np.float32)
        flow = getattr(nfbook, builder)(ndim, hidden_units=(16, 16), **kwargs)
        model = nfbook.FlowModel(flow, ndim=ndim)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(x, epochs=2, batch_size=128, verbose=0)
        model.save(HERE / f"{name}.nfbook")
        points = x[:16]
        values[name] = {"points": points.tolist(),
                        "log_prob": model.log_prob(points).numpy().tolist()}
    (HERE / "v010_log_prob.json").write_text(json.dumps(values, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
