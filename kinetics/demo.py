"""``make demo`` / ``kinetics demo``: the main job end to end on bundled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run(out: Path) -> int:
    from .cli import _save_plot
    from .library import resolve_model_path
    from .model import load_model
    from .simulate import simulate

    out.mkdir(parents=True, exist_ok=True)
    model = load_model(resolve_model_path("lifecycle"))
    print(model)
    print(model.equations())
    sim = simulate(model, np.linspace(0, 48, 193))
    sim.to_csv(out / "lifecycle.csv")
    _save_plot(lambda ax: sim.plot(ax=ax, names=model.state_names, logy=False), out / "lifecycle.png")
    print(f"\nwrote {out / 'lifecycle.csv'} and {out / 'lifecycle.png'}")
    return 0
