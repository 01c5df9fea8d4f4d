"""Fit the PEtab benchmark problems in ../shared/conformance/petab-benchmark with kinetics.

    python bench/petab_fits.py [NAME ...] [--starts 20] [--seed 0] [--executor serial|auto]

For each problem: the log-likelihood at the nominal values (and the reference value), then a
multi-start fit (the first start at the nominal values, the rest a Latin hypercube over the
bounds on each parameter's scale), reporting wall time, model evaluations, the best negative
log-likelihood and how many starts reached it (within 1e-3). Prints one JSON line per problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCHMARK = Path(os.environ.get("KINETICS_PETAB_BENCHMARK",
                                Path(__file__).resolve().parent.parent.parent / "shared/conformance/petab-benchmark"))
REFERENCE_LLH = {"Perelson_Science1996": -432.0385498, "Bruno_JExpBot2016": 46.6881815,
                 "Boehm_JProteomeRes2014": -138.2219978, "Crauste_CellSystems2017": -190.9639785}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=sorted(REFERENCE_LLH))
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", choices=["serial", "auto"], default="serial")
    args = parser.parse_args(argv)
    if not BENCHMARK.is_dir():
        sys.exit(f"{BENCHMARK}: the PEtab benchmark problems are not there (set KINETICS_PETAB_BENCHMARK)")
    from kinetics.errors import KineticsWarning
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_petab
    from kinetics.io.petab import evaluate
    warnings.simplefilter("ignore", KineticsWarning)
    for name in args.names:
        t0 = time.perf_counter()
        problem = load_petab(BENCHMARK / name / f"{name}.yaml")
        nominal = evaluate(problem)["llh"]
        problem.negative_loglik(problem.start(), gradient=True)     # compilation, outside the fit's time
        t1 = time.perf_counter()
        result = fit(problem, multistart=args.starts, seed=args.seed, profiles=False, progress=False,
                     executor=None if args.executor == "serial" else "auto")
        seconds = time.perf_counter() - t1
        best = -result.loglik
        print(json.dumps({
            "problem": name, "llh_nominal": nominal, "llh_reference": REFERENCE_LLH.get(name),
            "nll_nominal": -nominal, "nll_best": best, "starts": result.n_starts, "starts_at_best": result.n_at_best,
            "seconds": round(seconds, 2), "setup_seconds": round(t1 - t0, 2), "nfev": result.nfev,
            "method": result.method, "estimates": result.best_values and {n: result.best_values[n] for n in problem.free},
        }), flush=True)


if __name__ == "__main__":
    main()
