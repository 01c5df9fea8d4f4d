"""When may the multi-start's abandoned-start rule (kinetics.fitting.local.CannotReach) first
check? Traces every later start of the PEtab benchmark fits without the rule, then replays
candidate rules on the traces.

    python bench/abandon_study.py trace [NAME ...] [--seeds 0 1 2 3] [--out DIR]
    python bench/abandon_study.py replay [--out DIR]

``trace``: each problem's 20-start fit (bench/petab_fits.py's, serial) with CannotReach
replaced by a recorder that never stops a start: the cost of the current point before each
trial evaluation (what the rule is asked with), its evaluation count and the time, and each
start's end. The rule only ever ends a start early, so a start's trajectory up to where a rule
would stop it is the traced one: replaying a rule on the traces gives exactly where it stops
each start, what the start would have reached without it, and the evaluations saved (the
first start, which sets the reference, is never subject to the rule). One JSON file per
problem and seed in DIR (default /tmp/abandon_traces).

``replay``: for each rule, per problem and seed: evaluations of the later starts, starts
abandoned, and every abandoned start that would have ended at the best -log L (within
petab_fits' 1e-3) without the rule (a loss), or that the rule with warm-up 5n keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
BENCHMARK = Path(os.environ.get("KINETICS_PETAB_BENCHMARK", BENCH.parent.parent / "shared/conformance/petab-benchmark"))
NAMES = ["Boehm_JProteomeRes2014", "Bruno_JExpBot2016", "Crauste_CellSystems2017", "Perelson_Science1996"]
AT_BEST = 1e-3      # -log L within this of the best: the start reaches the best (FitResult.n_at_best)


class Recorder:
    """Stands in for CannotReach: records what the rule is asked, never stops."""
    made = []

    def __init__(self, reference, warm_up):
        self.reference, self.warm_up = float(reference), int(warm_up)
        self.calls = []     # (nfev, max_nfev, cost, seconds since the recorder was made)
        self.t0 = time.perf_counter()
        Recorder.made.append(self)

    def __call__(self, nfev, max_nfev, cost):
        self.calls.append((nfev, max_nfev, cost, time.perf_counter() - self.t0))
        return False


def trace(name, seed, starts=20):
    """The fit of one problem without the rule, with every later start's trace."""
    from kinetics.fitting import local
    from kinetics.fitting.optimize import fit
    from kinetics.fitting.problem import load_petab
    problem = load_petab(BENCHMARK / name / f"{name}.yaml")
    problem.negative_loglik(problem.start(), gradient=True)
    original, Recorder.made = local.CannotReach, []
    local.CannotReach = Recorder
    try:
        t = time.perf_counter()
        result = fit(problem, multistart=starts, seed=seed, profiles=False, progress=False, executor=None)
        seconds = time.perf_counter() - t
    finally:
        local.CannotReach = original
    later = list(Recorder.made)
    nll = [float(v) for v in result.start_nll]
    # one recorder per later start where the rule applies (the compiled trust region on the
    # exact likelihood), none where it does not (e.g. a profiled noise scale: Perelson)
    assert len(later) in (0, len(nll) - 1), (len(later), len(nll))
    return {"problem": name, "seed": seed, "n_free": len(problem.free), "seconds": seconds,
            "nfev": result.nfev, "nll_best": -result.loglik, "nll_per_start": nll,
            "starts": [{"reference": r.reference, "warm_up": r.warm_up, "calls": r.calls} for r in later]}


# ---- candidate rules, replayed on a trace: (nfev, max_nfev, costs so far, n_free, reference) -> stop?
def cannot_reach(warm_up_per_parameter, window=20, warm_up_floor=0):
    def rule(nfev, max_nfev, costs, n, reference):
        cost = costs[-1]
        if nfev < max(warm_up_per_parameter * n, warm_up_floor) or len(costs) <= window or cost <= reference:
            return False
        rate = (costs[-1 - window] - cost) / window
        return cost - rate * (max_nfev - nfev) > reference
    return rule


RULES = {
    "5n (now)": cannot_reach(5),
    "3n": cannot_reach(3),
    "2n": cannot_reach(2),
    "window only (21)": cannot_reach(0),
    "1n, window 2n": None,      # filled below: window depends on n
}


def replay_start(rule, start, n):
    """(stopped at call index or None, nfev there) of one traced start under a rule."""
    costs = []
    for i, (nfev, max_nfev, cost, *_) in enumerate(start["calls"]):
        costs.append(cost)
        if rule(nfev, max_nfev, costs, n, start["reference"]):
            return i, nfev
    return None, None


def replay(out, rules):
    files = sorted(Path(out).glob("*.json"))
    traces = [json.loads(f.read_text()) for f in files]
    for name, rule in rules.items():
        print(f"\n### {name}\n")
        print("| problem | seed | later starts' evaluations, traced (no rule) | with the rule | abandoned | "
              "at best without the rule | abandoned of those (loss) | abandoned at (nfev) |")
        print("|---|---|---|---|---|---|---|---|")
        for tr in traces:
            n, nll, best = tr["n_free"], tr["nll_per_start"], tr["nll_best"]
            full = ruled = 0
            abandoned, at_best, lost, where = 0, 0, [], []
            for k, start in enumerate(tr["starts"], start=1):
                calls = start["calls"]
                total = calls[-1][0] + 1 if calls else 1     # each call precedes one evaluation
                reached = nll[k] - best <= AT_BEST + 1e-6 * abs(best)
                at_best += reached
                full += total
                i, nfev = replay_start(rule, start, n)
                if i is None:
                    ruled += total
                    continue
                ruled += nfev
                abandoned += 1
                where.append(nfev)
                if reached:
                    lost.append(k)
            print(f"| {tr['problem'][:14]} | {tr['seed']} | {full} | {ruled} | {abandoned} | {at_best} | "
                  f"{len(lost)} {lost if lost else ''} | {sorted(where)} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["trace", "replay"])
    parser.add_argument("names", nargs="*", default=NAMES)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    parser.add_argument("--out", default="/tmp/abandon_traces")
    args = parser.parse_args(argv)
    from kinetics.errors import KineticsWarning
    warnings.simplefilter("ignore", KineticsWarning)
    if args.mode == "trace":
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for name in args.names:
            for seed in args.seeds:
                tr = trace(name, seed)
                Path(args.out, f"{name}_{seed}.json").write_text(json.dumps(tr))
                print(name, seed, f"{tr['seconds']:.2f} s", tr["nfev"], f"{tr['nll_best']:.6f}",
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        return
    rules = dict(RULES)
    rules["1n, window 2n"] = lambda nfev, mx, costs, n, ref: cannot_reach(1, window=2 * n)(nfev, mx, costs, n, ref)
    replay(args.out, rules)


if __name__ == "__main__":
    main()


def trace_model(name, seed, starts=20):
    """As :func:`trace`, and at each call the Gauss-Newton model's minimum at the current point:
    cost - 0.5 |P_J r|^2 without bounds, and min 0.5 |r + J p|^2 over steps p inside the bounds
    (scipy's lsq_linear): how low the trust region's own linear model says this start can go."""
    from scipy.optimize import lsq_linear
    from kinetics.numerics import trust_region
    original = trust_region.least_squares_trf

    def wrapped(fun_and_jac, x0, lower, upper, **kw):
        seen = []

        def evaluated(z):
            r, J = fun_and_jac(z)
            seen.append((0.5 * float(r @ r), z.copy(), np.array(r), np.array(J)))
            del seen[:-8]
            return r, J
        stop = kw.get("stop")
        if stop is not None:
            def asked(nfev, max_nfev, cost):
                _, z, r, J = min(seen, key=lambda s: abs(s[0] - cost))
                U, s, _ = np.linalg.svd(J, full_matrices=False)
                rank = s > s[0] * 1e-12 * max(J.shape)
                free_min = cost - 0.5 * float(np.sum((U[:, rank].T @ r) ** 2))
                lo, hi = np.asarray(lower, float) - z, np.asarray(upper, float) - z
                bounded = lsq_linear(J, -r, bounds=(np.minimum(lo, 0), np.maximum(hi, 0)), method="bvls")
                # and where the current point lies within its bounds (0 lower, 1 upper)
                where = (z - lower) / (np.asarray(upper, float) - lower)
                stop.models.append((free_min, 0.5 * float(np.sum((r + J @ bounded.x) ** 2)), where.tolist()))
                return stop(nfev, max_nfev, cost)
            stop.models = []
            kw["stop"] = asked
        return original(evaluated, x0, lower, upper, **kw)
    trust_region.least_squares_trf = wrapped
    try:
        out = trace(name, seed, starts)
    finally:
        trust_region.least_squares_trf = original
    out["models"] = [getattr(r, "models", []) for r in Recorder.made]
    return out
