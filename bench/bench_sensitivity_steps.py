"""The compiled integrator's cost per step with forward sensitivities, on the nonlinear PEtab
benchmark problems (../shared/conformance/petab-benchmark) at their nominal values.

    python bench/bench_sensitivity_steps.py [NAME ...] [--repeat 200]

For each problem: one evaluation of the negative log-likelihood with its gradient records the
arguments of the integrator's call with sensitivities (``kinetics.numerics.rosenbrock.integrate``
with ``n_base``); that call is then repeated (median of ``--repeat``), and again with the state
alone (the same problem's evaluation without gradient). Prints values (states and
sensitivities), steps, µs per step with and without sensitivities, and their ratio.
Compare branches by running this script in each tree, alternating, in the same session.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARK = Path(os.environ.get("KINETICS_PETAB_BENCHMARK", BENCH.parent.parent / "shared/conformance/petab-benchmark"))
NONLINEAR = ["Boehm_JProteomeRes2014", "Crauste_CellSystems2017"]


def recorded_calls(problem, gradient):
    """The integrator's calls (args, kwargs) of one evaluation."""
    import kinetics.numerics.rosenbrock as rosenbrock
    calls = []
    original = rosenbrock.integrate

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)
    rosenbrock.integrate = recording
    try:
        problem.negative_loglik(problem.start(), gradient=gradient)
    finally:
        rosenbrock.integrate = original
    return calls


def per_step(args, kwargs, repeat):
    """(values, steps, median µs per step) of repeating one recorded integrator call."""
    import numpy as np
    from kinetics.numerics.rosenbrock import integrate
    _, _, steps, _ = integrate(*args, **kwargs)
    seconds = []
    for _ in range(repeat):
        t = time.perf_counter()
        integrate(*args, **kwargs)
        seconds.append(time.perf_counter() - t)
    return len(args[2]), steps, 1e6 * float(np.median(seconds)) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=NONLINEAR)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    if not BENCHMARK.is_dir():
        sys.exit(f"no PEtab benchmark problems at {BENCHMARK} (set KINETICS_PETAB_BENCHMARK)")
    from kinetics.fitting.problem import load_petab
    print("| problem | values | steps | µs per step with sensitivities | state alone: steps, µs per step | ratio | load |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names:
        problem = load_petab(BENCHMARK / name / f"{name}.yaml")
        with_sens = [c for c in recorded_calls(problem, True) if c[1].get("n_base")]
        alone = recorded_calls(problem, False)
        if not with_sens or not alone:
            print(f"| {name} | (no call of the compiled integrator: not a nonlinear model) | | | | | |")
            continue
        n, steps, us = per_step(*with_sens[0], args.repeat)
        _, steps0, us0 = per_step(*alone[0], args.repeat)
        print(f"| {name} | {n} | {steps} | {us:.2f} | {steps0}, {us0:.2f} | {us / us0:.1f} | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
