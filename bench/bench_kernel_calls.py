"""Per-call time of the stiff integrator and the compiled matrix exponential on small models:
the runtime side of the compile-time work of issue 12 (a kernel that compiles faster must not
run slower). Run it once per source tree, alternating, to compare two trees:

    NUMBA_CACHE_DIR=DIR PYTHONPATH=TREE .venv/bin/python bench/bench_kernel_calls.py [ROUNDS]

Cases (30 parameter sets each, perturbed log-normally with sd 0.2, 21 output times over 48 h):
exo_sat and receptor_uptake (a triggered event: the integrator watching it) through
``Schedule.run``, states alone and with 6 sensitivity directions; a defective chain (n = 6,
equal rates) through ``solve_affine(method="expm")`` with 4 directions. Prints the median CPU
microseconds per simulation over ROUNDS rounds (default 12) as JSON.
"""

import json
import sys
from pathlib import Path

import numpy as np

import kinetics
from kinetics.numerics import linear
from kinetics.simulation.schedule import Schedule

from common import cpu_microseconds

N = 30


def cases():
    root = Path(kinetics.__file__).resolve().parent.parent / "models"
    rng = np.random.default_rng(1)
    out = {}
    for name in ("exo_sat", "receptor_uptake"):
        c = kinetics.compile_model(kinetics.load_model(root / f"{name}.toml"))
        schedule = Schedule(c, np.linspace(0, 48, 21))
        P = c.default_parameters * np.exp(0.2 * rng.standard_normal((N, c.n_params)))
        D = np.eye(c.n_params)[:, :min(6, c.n_params)]
        out[f"{name} states"] = lambda s=schedule, P=P: [s.run(p) for p in P]
        out[f"{name} + sensitivities"] = lambda s=schedule, P=P, D=D: [s.run(p, D) for p in P]
    n = 6
    A = 0.7 * (-np.eye(n) + np.diag(np.ones(n - 1), -1))
    dA = np.stack([A * (np.arange(n) == k)[:, None] for k in range(4)])
    taus = np.linspace(0, 20, 21)
    out["expm chain n=6, 4 directions"] = lambda: [
        linear.solve_affine(A * (1 + 0.01 * i), np.ones(n), np.zeros(n), taus, dA, np.zeros((4, n)), np.zeros((n, 4)),
                            method="expm") for i in range(N)]
    return out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    todo = cases()
    for run in todo.values():
        run()                      # compile or load the kernels
    print(json.dumps(cpu_microseconds(todo, rounds, N)))


if __name__ == "__main__":
    main()
