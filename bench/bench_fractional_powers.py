"""Per-call time of the stiff integrator on a model with a fractional power of a state: a Hill
step ``vmax * A**h / (K**h + A**h)`` from an empty pool A(0) = 0, whose integrator Jacobian (and
sensitivity right-hand side) carry the guards of powers infinite at 0. Run it once per source
tree, alternating, to compare two trees:

    NUMBA_CACHE_DIR=DIR PYTHONPATH=TREE .venv/bin/python bench/bench_fractional_powers.py [ROUNDS]

Cases (30 parameter sets each, perturbed log-normally with sd 0.1, 21 output times over 24 h):
h = 1.5 (a tree before the guards for h < 1 runs it too) and h = 0.6 (which such a tree cannot
simulate: reported as null), states alone and with 4 sensitivity directions (vmax, K, h, s).
Prints the median CPU microseconds per simulation over ROUNDS rounds (default 12, 2 with
BENCH_QUICK=1) as JSON.
"""

import json
import os
import sys

import numpy as np

import kinetics
from kinetics.simulation.schedule import Schedule

from common import cpu_microseconds

N = 30
HILL = {
    "compartments": {"A": {"initial": 0}, "B": {"initial": 0}},
    "parameters": {"s": 1.0, "vmax": 2.0, "K": 1.0, "h": 1.5, "k": 0.3},
    "flows": {"prod": {"to": "A", "rate": "s"}, "conv": {"from": "A", "to": "B", "rate": "vmax * A**h / (K**h + A**h)"},
              "out": {"from": "B", "rate": "k * B"}},
}


def cases():
    rng = np.random.default_rng(1)
    c = kinetics.compile_model(kinetics.Model.from_dict(HILL))
    schedule = Schedule(c, np.linspace(0, 24, 21))
    names = c.parameter_names
    D = np.eye(c.n_params)[:, [names.index(n) for n in ("vmax", "K", "h", "s")]]
    out = {}
    for h in (1.5, 0.6):
        base = c.default_parameters.copy()
        base[names.index("h")] = h
        P = base * np.exp(0.1 * rng.standard_normal((N, c.n_params)))
        out[f"h={h} states"] = lambda P=P: [schedule.run(p) for p in P]
        out[f"h={h} + 4 sensitivities"] = lambda P=P: [schedule.run(p, D) for p in P]
    return out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else (2 if os.environ.get("BENCH_QUICK") else 12)
    todo = {}
    for name, run in cases().items():
        try:
            run()                  # compile or load the kernels
            todo[name] = run
        except kinetics.SolverError:
            pass                   # not simulable in this tree
    measured = cpu_microseconds(todo, rounds, N)
    print(json.dumps({name: measured.get(name) for name in cases()}))


if __name__ == "__main__":
    main()
