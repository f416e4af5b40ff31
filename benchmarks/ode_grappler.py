"""What Grappler earns in FFJORD's training step: chapter 10's FFJORD with it on and off.

``nfbook``'s step loop calls its compiled function without Grappler, TensorFlow's graph
optimizer, except for a flow with an ODE (``FlowModel.graph_optimizer``). This script trains
chapter 10's FFJORD on the moons both ways, in one process: two models from the same seed, one
of them a ``FlowModel`` subclass with ``graph_optimizer = False``. The ways take turns epoch by
epoch, so a change in the machine's speed reaches both. The table gives each way's first epoch
(tracing and Grappler's rewriting included), the median seconds of the later epochs, and the
training loss after the last epoch (the rewritten arithmetic rounds differently, so the two
trajectories part a little).

Run from the repository root::

    .venv/bin/python benchmarks/ode_grappler.py
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import nfbook  # noqa: E402

from continuous_flows import X_TRAIN, ffjord_model  # noqa: E402
from report import write  # noqa: E402


class WithoutGrappler(nfbook.FlowModel):
    graph_optimizer = False


def build(model_class: type, epochs: int, batch_size: int) -> nfbook.FlowModel:
    """Chapter 10's FFJORD (``continuous_flows.ffjord_model``) from seed 0."""
    nfbook.set_seed(0)
    return ffjord_model(epochs, batch_size, model_class)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=14, help="chapter 10 trains 14")
    parser.add_argument("--report", default="ode_grappler")
    args = parser.parse_args()
    batch_size = 128
    ways = {"on": build(nfbook.FlowModel, args.epochs, batch_size),
            "off": build(WithoutGrappler, args.epochs, batch_size)}
    assert ways["on"].graph_optimizer and not ways["off"].graph_optimizer
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    losses: dict[str, float] = {}
    for epoch in range(args.epochs):
        for way, model in ways.items():
            start = time.perf_counter()
            history = model.fit(X_TRAIN, initial_epoch=epoch, epochs=epoch + 1,
                                batch_size=batch_size, verbose=0)
            seconds[way].append(time.perf_counter() - start)
            losses[way] = history.history["loss"][-1]
            print(f"epoch {epoch}, Grappler {way}: {seconds[way][-1]:.1f} s, "
                  f"loss {losses[way]:.4f}", flush=True)
    later = {way: float(np.median(s[1:])) for way, s in seconds.items()}
    lines = [
        f"Chapter 10's FFJORD (`nfbook.ffjord(2, hidden_units=(64, 64), time_features=4)`, "
        f"exact trace, solver tolerances 1e-3) trained by `FlowModel.fit` on "
        f"`moons(10000)`, batch {batch_size}, {args.epochs} epochs, the two ways taking turns "
        "epoch by epoch. Ratio: seconds with Grappler off over seconds with it on.",
        "",
        "| Grappler | first epoch (s) | later epochs (s/epoch, median) | total (s) "
        "| final training loss |",
        "| --- | --- | --- | --- | --- |",
    ]
    for way in ways:
        lines.append(f"| {way} | {seconds[way][0]:.1f} | {later[way]:.2f} | "
                     f"{sum(seconds[way]):.0f} | {losses[way]:.3f} |")
    lines.append(f"| ratio | {seconds['off'][0] / seconds['on'][0]:.2f}x | "
                 f"{later['off'] / later['on']:.2f}x | "
                 f"{sum(seconds['off']) / sum(seconds['on']):.2f}x | |")
    write(args.report, lines)


if __name__ == "__main__":
    main()
