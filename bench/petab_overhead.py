"""The Python cost of one evaluation of a PEtab benchmark problem's fit objective, apart from the
compiled integrator: what ``kinetics.fitting.optimize.fit`` evaluates per trust-region step
(``FitProblem.sigma_residuals`` where sigmas are estimated, else ``likelihood_residuals``), at
the nominal values, with and without the Jacobian (forward sensitivities).

    python bench/petab_overhead.py [NAME ...] [--calls 400] [--fits 0]

Prints per problem the median time of a call and the median of the same calls minus the time
spent in ``kinetics.numerics.rosenbrock.integrate`` (timed by wrapping it; the simulation
imports it at each call, so the wrapper sees every call). Problems without the numerical
integrator (affine models, solved exactly) have no integrator time to subtract.

With ``--fits N``, then N multi-start fits of each problem in this process as in
``petab_fits.py`` (20 starts, seed 0, serial), after one untimed fit (numba's cache loads): the
median wall and CPU (process) seconds, the latter less sensitive to other processes on the
machine than the wall time, and the evaluations.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

BENCHMARK = Path(os.environ.get("KINETICS_PETAB_BENCHMARK", BENCH.parent.parent / "shared/conformance/petab-benchmark"))
PROBLEMS = ["Boehm_JProteomeRes2014", "Crauste_CellSystems2017", "Bruno_JExpBot2016", "Perelson_Science1996"]


def main(argv=None) -> int:
    import numpy as np
    import kinetics.numerics.rosenbrock as rosenbrock
    from kinetics.fitting.problem import load_petab
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=PROBLEMS)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--fits", type=int, default=0, help="also time this many 20-start fits per problem")
    args = parser.parse_args(argv)
    integrate, in_integrator = rosenbrock.integrate, [0.0]

    def timed_integrate(*a, **k):
        start = time.perf_counter()
        try:
            return integrate(*a, **k)
        finally:
            in_integrator[0] += time.perf_counter() - start
    rosenbrock.integrate = timed_integrate
    print(f"load average {os.getloadavg()[0]:.2f}")
    for name in args.names:
        problem = load_petab(BENCHMARK / name / f"{name}.yaml")
        x = problem.start()
        if problem.has_sigma_residuals:
            objective, what = (lambda jacobian: problem.sigma_residuals(x, jacobian=jacobian)), "sigma_residuals"
        else:
            objective, what = (lambda jacobian: problem.likelihood_residuals(x, jacobian=jacobian)), "likelihood_residuals"
        objective(True)      # compilation, outside the timing
        figures = []
        for jacobian in (False, True):
            total, outside = [], []
            for _ in range(args.calls):
                in_integrator[0] = 0.0
                start = time.perf_counter()
                objective(jacobian)
                seconds = time.perf_counter() - start
                total.append(seconds)
                outside.append(seconds - in_integrator[0])
            figures.append(f"{'with' if jacobian else 'without'} Jacobian {np.median(total) * 1e3:.3f} ms, "
                           f"outside the integrator {np.median(outside) * 1e6:.0f} us")
        print(f"{name} ({what}): " + "; ".join(figures), flush=True)
        if args.fits:
            rosenbrock.integrate = integrate
            time_fits(problem, args.fits)
            rosenbrock.integrate = timed_integrate
    return 0


def time_fits(problem, n):
    """Median wall and CPU seconds of n 20-start fits (after an untimed one), and evaluations."""
    import numpy as np
    from kinetics.fitting.optimize import fit
    walls, cpus = [], []
    for k in range(n + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fit(problem, multistart=20, seed=0, profiles=False, progress=False, executor=None)
        if k:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    print(f"  {n} fits: wall {np.median(walls):.3f} s, CPU {np.median(cpus):.3f} s (median); {result.nfev} "
          f"evaluations ({result.njev} with sensitivities), best -loglik {-result.loglik!r}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
