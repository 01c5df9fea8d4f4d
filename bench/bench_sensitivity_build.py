"""Time to build a model's sensitivity system, and its first and later solves, as the model grows.

    python bench/bench_sensitivity_build.py [--states 5 10 20] [--repeat 5]

A nonlinear chain of N pools (X_i -> X_{i+1} at k_i X_i / (K_i + X_{i+1}), the last one leaving
at k X / (K + X)) with 2N parameters, written as a model file and compiled; then the first
solve of the states alone, the first with the sensitivities to all 2N parameters (which builds
the sensitivity system: its tapes and the integrator's plans; the integrator's kernels are
compiled before timing), and the median of later ones. Compare branches by running this
script in each tree.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def chain_model_file(n: int, folder: Path) -> Path:
    lines = ['name = "chain"', 'time_unit = "h"', "", "[compartments]"]
    lines += [f"X{i} = {{ initial = {1.0 if i == 0 else 0.1} }}" for i in range(n)]
    lines += ["", "[parameters]"]
    for i in range(n):
        lines.append(f"k{i} = {{ value = {0.5 + 0.01 * i}, min = 1e-3, max = 10 }}")
        lines.append(f"K{i} = {{ value = {1.0 + 0.02 * i}, min = 1e-3, max = 10 }}")
    lines += ["", "[flows]"]
    lines += [f'f{i} = {{ from = "X{i}", to = "X{i + 1}", rate = "k{i} * X{i} / (K{i} + X{i + 1})" }}'
              for i in range(n - 1)]
    lines.append(f'out = {{ from = "X{n - 1}", rate = "k{n - 1} * X{n - 1} / (K{n - 1} + X{n - 1})" }}')
    path = folder / f"chain_{n}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from kinetics import compile_model, load_model, warm_up
    warm_up()
    print("| states | parameters | first solve, states alone | first solve with sensitivities (builds them) | "
          "later solves with sensitivities (median) | load |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for n in args.states:
            model = compile_model(load_model(chain_model_file(n, Path(folder))))
            p = model.default_parameters
            times = np.linspace(0.1, 10.0, 20)
            t0 = time.perf_counter()
            model.solve(p, model.initial_state(p), times)
            t1 = time.perf_counter()
            D = np.eye(len(p))
            model.solve(p, model.initial_state(p), times, S0=model.initial_sensitivity(p, D), D=D)
            t2 = time.perf_counter()
            later = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                model.solve(p, model.initial_state(p), times, S0=model.initial_sensitivity(p, D), D=D)
                later.append(time.perf_counter() - t)
            print(f"| {n} | {len(p)} | {t1 - t0:.2f} s | {t2 - t1:.2f} s | {1e3 * np.median(later):.2f} ms | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
