"""zuko's MAF on the moons split, timed like ``moons.py`` times nfbook: the PyTorch reference.

It needs only NumPy, PyTorch and zuko (no TensorFlow), so it runs in a Python environment of
its own; ``moons.py --zuko-python PATH`` calls it once per seed and puts its rows in the same
table, measured in the same run as the classic TFP code and nfbook. The flow is
``zuko.flows.MAF(2, transforms=3, hidden_features=(128, 128))``, the same size as the classic
tutorial's (52,236 parameters), trained with Adam in a plain PyTorch loop: reshuffle, then one
step per batch. Training seconds exclude the held-out scoring after every epoch.

Run on its own (prints one JSON record: held-out NLL and cumulative seconds per epoch)::

    python -m venv .zuko && .zuko/bin/pip install torch zuko numpy
    .zuko/bin/python benchmarks/zuko_maf.py --data split.npz --seed 0 --batch-size 1024 \\
        --learning-rate 3e-3

where ``split.npz`` holds float32 arrays ``train`` and ``test`` of shape ``(n, 2)``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import zuko


def train(train_data: np.ndarray, test_data: np.ndarray, seed: int, batch_size: int,
          learning_rate: float, max_epochs: int, max_seconds: float) -> dict:
    """Train a 3-layer zuko MAF by maximum likelihood and score the held-out set after each
    epoch; stop after ``max_epochs`` or once ``max_seconds`` of training have passed."""
    torch.manual_seed(seed)
    flow = zuko.flows.MAF(features=2, transforms=3, hidden_features=(128, 128))
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
    x, held_out = torch.from_numpy(train_data), torch.from_numpy(test_data)
    nll: list[float] = []
    seconds: list[float] = []
    elapsed = 0.0
    for _ in range(max_epochs):
        start = time.perf_counter()
        for batch in x[torch.randperm(len(x))].split(batch_size):
            loss = -flow().log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        elapsed += time.perf_counter() - start
        with torch.no_grad():
            nll.append(float(-flow().log_prob(held_out).mean()))
        seconds.append(elapsed)
        if elapsed >= max_seconds:
            break
    return {"nll": nll, "seconds": seconds,
            "parameters": sum(p.numel() for p in flow.parameters()),
            "versions": f"PyTorch {torch.__version__}, zuko {zuko.__version__}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help=".npz file with `train` and `test`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds")
    args = parser.parse_args()
    split = np.load(args.data)
    record = train(split["train"], split["test"], args.seed, args.batch_size,
                   args.learning_rate, args.max_epochs, args.budget)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
