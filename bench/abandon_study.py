"""When may the multi-start's abandoned-start rule (kinetics.fitting.local.CannotReach) first
check? Traces every later start of the PEtab benchmark fits without the rule, then replays
candidate rules on the traces.

    python bench/abandon_study.py trace [NAME ...] [--seeds 0 1 2 3] [--out DIR] [--model]
    python bench/abandon_study.py replay [--out DIR] [--detail]
    python bench/abandon_study.py show NAME --seeds S --start K [--out DIR]

``trace``: each problem's 20-start fit (bench/petab_fits.py's, serial) with CannotReach
replaced by a recorder that never stops a start: the cost and the point of the current
iterate before each trial evaluation (what the rule is asked with), its evaluation count and
the time, and each start's end. The rule only ever ends a start early, so a start's trajectory
up to where a rule would stop it is the traced one: replaying a rule on the traces gives
exactly where it stops each start, what the start would have reached without it, and the
evaluations saved (the first start, which sets the reference, is never subject to the rule).
One JSON file per problem and seed in DIR (default /tmp/abandon_traces). ``--model``: also the
minimum of the trust region's Gauss-Newton model at each call (without and within the bounds).

``replay``: kinetics' CannotReach, with several warm-ups, with and without its bound guard
(RULES), on every trace: the later starts' evaluations, the starts abandoned, and every
abandoned start that would have ended at the best -log L (within petab_fits' 1e-3) without
the rule: the loss to avoid. ``show``: one traced start, call by call.
"""

from __future__ import annotations

import argparse
import json
import math
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

    def __init__(self, reference, warm_up, lower=None, upper=None):
        self.reference, self.warm_up = float(reference), int(warm_up)
        self.lower = None if lower is None else [float(v) for v in lower]
        self.upper = None if upper is None else [float(v) for v in upper]
        self.calls = []     # (nfev, max_nfev, cost, seconds since the recorder was made, point)
        self.t0 = time.perf_counter()
        Recorder.made.append(self)

    def __call__(self, nfev, max_nfev, cost, x=None):
        self.calls.append((nfev, max_nfev, cost, time.perf_counter() - self.t0,
                           None if x is None else [float(v) for v in x]))
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
            "starts": [{"reference": r.reference, "warm_up": r.warm_up, "lower": r.lower, "upper": r.upper,
                        "calls": r.calls} for r in later]}


# ---- the rules replayed: kinetics' CannotReach with a warm-up of k evaluations per free
# parameter, with or without its bound guard (LEAVING_BOUND), and the same without the guard,
# with a window of 2n (PROGRESS_WINDOW) and from 1n on
RULES = {"5n, no bound guard (before)": (5, False, None), "3n, no bound guard": (3, False, None),
         "2n, no bound guard": (2, False, None), "from the first full window, no bound guard": (0, False, None),
         "1n, window 2n, no bound guard": (1, False, "2n"), "5n, bound guard": (5, True, None),
         "3n, bound guard": (3, True, None), "2n, bound guard (now)": (2, True, None),
         "from the first full window, bound guard": (0, True, None)}


def replay_start(rule, start, n):
    """(index of the call where the rule stops one traced start or None, nfev there)."""
    from kinetics.fitting import local
    k, guard, window = rule
    saved = local.LEAVING_BOUND, local.PROGRESS_WINDOW
    local.LEAVING_BOUND = saved[0] if guard else math.inf
    local.PROGRESS_WINDOW = 2 * n if window == "2n" else saved[1]
    try:
        stop = local.CannotReach(start["reference"], k * n, start.get("lower"), start.get("upper"))
        for i, (nfev, max_nfev, cost, _, x) in enumerate(start["calls"]):
            if stop(nfev, max_nfev, cost, None if x is None else np.array(x)):
                return i, nfev
    finally:
        local.LEAVING_BOUND, local.PROGRESS_WINDOW = saved
    return None, None


def replay(out, rules, detail=False):
    """Each rule on every trace in ``out``: a summary row per rule (all seeds) and, with
    ``detail``, a row per problem and seed."""
    traces = [json.loads(f.read_text()) for f in sorted(Path(out).glob("*.json"))]
    traces = [t for t in traces if t["starts"]]     # problems the rule applies to
    problems = sorted({t["problem"] for t in traces})
    summary = {}
    for name, rule in rules.items():
        rows = []
        for tr in traces:
            n, nll, best = tr["n_free"], tr["nll_per_start"], tr["nll_best"]
            full = ruled = 0
            at_best, lost, where = 0, [], []
            for k, start in enumerate(tr["starts"], start=1):
                calls = start["calls"]
                total = calls[-1][0] + 1 if calls else 1     # each call precedes one evaluation
                reached = nll[k] - best <= AT_BEST + 1e-6 * abs(best)
                at_best += reached
                full += total
                i, nfev = replay_start(rule, start, n)
                ruled += total if i is None else nfev
                if i is not None:
                    where.append(nfev)
                    if reached:
                        lost.append(k)
            rows.append((tr, full, ruled, at_best, lost, where))
            cell = summary.setdefault((name, tr["problem"]), [0, 0, 0, 0, []])
            cell[0] += full
            cell[1] += ruled
            cell[2] += len(where)
            cell[3] += at_best
            cell[4] += [(tr["seed"], k) for k in lost]
        if detail:
            print(f"\n### {name}\n")
            print("| problem | seed | later starts' evaluations without the rule | with it | abandoned at (nfev) | "
                  "starts at best without the rule | of those abandoned |")
            print("|---|---|---|---|---|---|---|")
            for tr, full, ruled, at_best, lost, where in rows:
                print(f"| {tr['problem']} | {tr['seed']} | {full} | {ruled} | {sorted(where)} | {at_best} | "
                      f"{lost or 0} |")
    seeds = sorted({t["seed"] for t in traces})
    print(f"\nLater starts (19 per fit) of seeds {seeds}: evaluations with the rule / without it, starts "
          "abandoned, starts that end at the best without the rule and are abandoned by it (seed, start)\n")
    print("| rule | " + " | ".join(problems) + " |")
    print("|---|" + "---|" * len(problems))
    for name in rules:
        cells = []
        for p in problems:
            full, ruled, abandoned, at_best, lost = summary[(name, p)]
            cells.append(f"{ruled}/{full}, {abandoned} abandoned, lost {lost if lost else 0} of {at_best}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def stress(out, rules):
    """Each rule with other references: for every local optimum the later starts of a trace end
    at (their traced end costs, grouped within 1e-3), the rule with that optimum as its
    reference (plus 1e-3), as if the first start had ended there. A start ending at or below
    it that the rule abandons is a loss. On Boehm and Crauste no later start reaches the first
    start's optimum, so the real reference tests nothing there; these references test the rule
    on every local optimum the starts do reach."""
    traces = [json.loads(f.read_text()) for f in sorted(Path(out).glob("*.json"))]
    traces = [t for t in traces if t["starts"]]
    problems = sorted({t["problem"] for t in traces})
    print("\nOther references: every local optimum the later starts end at (seeds pooled): references "
          "tried, starts ending at or below them, of those abandoned (problem seed start: nfev)\n")
    print("| rule | " + " | ".join(problems) + " |")
    print("|---|" + "---|" * len(problems))
    for name, rule in rules.items():
        cells = []
        for p in problems:
            tried = reaching = 0
            lost = []
            for tr in (t for t in traces if t["problem"] == p):
                ends = [s["calls"][-1][2] for s in tr["starts"] if s["calls"]]
                levels = []
                for e in sorted(ends):
                    if not levels or e > levels[-1] + 1e-3:
                        levels.append(e)
                for level in levels[:-1]:       # the highest: every start reaches it
                    tried += 1
                    for k, start in enumerate(tr["starts"], start=1):
                        if not start["calls"] or start["calls"][-1][2] > level + 1e-3:
                            continue
                        reaching += 1
                        i, nfev = replay_start(rule, dict(start, reference=level + 1e-3), tr["n_free"])
                        if i is not None:
                            lost.append(f"{tr['seed']} {k}: {nfev}")
            cells.append(f"{tried} references, {reaching} starts, lost {len(lost)}"
                         + (f" ({'; '.join(lost[:6])}{' ...' if len(lost) > 6 else ''})" if lost else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


def show(out, name, seed, start):
    """One traced start (``trace --model``): evaluations, cost, the Gauss-Newton model's minimum
    without and within the bounds, and the smallest distance of a parameter to its nearest bound
    (fraction of its range)."""
    tr = json.loads(Path(out, f"{name}_{seed}.json").read_text())
    s = tr["starts"][start - 1]
    lo, hi = np.array(s["lower"]), np.array(s["upper"])
    print(f"{name}, seed {seed}, start {start}: reference {s['reference']:.4f} (trust-region cost units), "
          f"-log L at its end {tr['nll_per_start'][start]:.4f}, best {tr['nll_best']:.4f}")
    print("| nfev | cost | model minimum | within the bounds | nearest bound (fraction of the range), parameter |")
    print("|---|---|---|---|---|")
    models = tr["models"][start - 1] if tr.get("models") else []
    for i, (nfev, _, cost, _, x) in enumerate(s["calls"]):
        model = models[i] if i < len(models) else None
        w = (np.array(x) - lo) / (hi - lo)
        d = np.minimum(w, 1 - w)
        m = ("", "") if model is None else (f"{model[0]:.3f}", f"{model[1]:.3f}")
        print(f"| {nfev} | {cost:.4f} | {m[0]} | {m[1]} | {d.min():.4f}, {int(d.argmin())} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["trace", "replay", "show"])
    parser.add_argument("names", nargs="*", default=NAMES)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    parser.add_argument("--out", default="/tmp/abandon_traces")
    parser.add_argument("--model", action="store_true",
                        help="trace: also the trust region's Gauss-Newton model minimum at each call")
    parser.add_argument("--detail", action="store_true", help="replay: a row per problem and seed")
    parser.add_argument("--start", type=int, default=1, help="show: which later start (1-19)")
    args = parser.parse_args(argv)
    from kinetics.errors import KineticsWarning
    warnings.simplefilter("ignore", KineticsWarning)
    if args.mode == "show":
        show(args.out, args.names[0], args.seeds[0], args.start)
        return
    if args.mode == "replay":
        replay(args.out, RULES, args.detail)
        stress(args.out, RULES)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in args.names:
        for seed in args.seeds:
            tr = trace_model(name, seed) if args.model else trace(name, seed)
            Path(args.out, f"{name}_{seed}.json").write_text(json.dumps(tr))
            print(name, seed, f"{tr['seconds']:.2f} s", tr["nfev"], f"{tr['nll_best']:.6f}",
                  f"load {os.getloadavg()[0]:.1f}", flush=True)


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
            seen.append((0.5 * float(r @ r), np.array(r), np.array(J)))
            del seen[:-8]
            return r, J
        stop = kw.get("stop")
        if stop is not None:
            def asked(nfev, max_nfev, cost, x):
                _, r, J = min(seen, key=lambda e: abs(e[0] - cost))     # the current point's evaluation
                U, s, _ = np.linalg.svd(J, full_matrices=False)
                rank = s > s[0] * 1e-12 * max(J.shape)
                free_min = cost - 0.5 * float(np.sum((U[:, rank].T @ r) ** 2))
                lo, hi = np.asarray(lower, float) - x, np.asarray(upper, float) - x
                bounded = lsq_linear(J, -r, bounds=(np.minimum(lo, 0), np.maximum(hi, 0)), method="bvls")
                stop.models.append((free_min, 0.5 * float(np.sum((r + J @ bounded.x) ** 2))))
                return stop(nfev, max_nfev, cost, x)
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


if __name__ == "__main__":
    main()
