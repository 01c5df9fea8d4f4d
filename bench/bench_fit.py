"""Fit benchmark: the reference fit task (``../shared/reference/fit_task``: six rates of
exo_linear from P and MVB time courses, start off by 3x), kinetics against scipy
``least_squares`` over libRoadRunner simulations and, where an interpreter with amici and
pypesto is named by KINETICS_AMICI_PYTHON, AMICI + pyPESTO, all measured in the same run.

    .venv/bin/python bench/bench_fit.py [--quick]
    KINETICS_AMICI_PYTHON=/path/to/amici-venv/bin/python .venv/bin/python bench/bench_fit.py

All minimize the same objective: residuals (y - f)/|y| (proportional noise), in log10
parameter space, from the start in fit.toml, within the model's bounds.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import csv  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from amici_peer import find_amici_python, run_amici_peer, task_spec  # noqa: E402
from common import (QUICK, REFERENCE, RoadRunnerModel, fmt_time, machine_summary, paired_ratio,  # noqa: E402
                    roadrunner_available, table)
import kinetics  # noqa: E402
from kinetics.fitting.optimize import fit  # noqa: E402
from kinetics.fitting.problem import load_fit_spec  # noqa: E402

TASK = REFERENCE / "fit_task"
#: PEERS.md figures (another machine; AMICI is re-measured here when KINETICS_AMICI_PYTHON names an
#: interpreter with amici and pypesto: see amici_peer.py)
AMICI_MULTISTART_S = 1.95
AMICI_SINGLE_S = 0.058
PEERS_RR_LSQ_S = 0.048
NOISE_REL = 0.05          # the synthetic data's proportional noise (fit.toml)


class RoadRunnerFit:
    """The peer: scipy.optimize.least_squares (trf, 2-point finite differences) over
    libRoadRunner simulations, written as a user would without kinetics."""

    def __init__(self, task=TASK):
        spec = tomllib.loads((task / "fit.toml").read_text())
        self.model = kinetics.load_model(task / spec["model"])   # read only for the SBML export
        rows = list(csv.DictReader(open(task / spec["data"], newline="")))
        self.times = np.array(sorted({float(r["time"]) for r in rows}))
        self.observables = sorted({r["observable"] for r in rows})
        self.t_index = np.array([int(np.searchsorted(self.times, float(r["time"]))) for r in rows])
        self.o_index = np.array([self.observables.index(r["observable"]) for r in rows])
        self.y = np.array([float(r["value"]) for r in rows])
        self.w = 1.0 / np.abs(self.y)
        names = list(self.model.parameters)
        self.base = np.array([float(self.model.parameters[n].value) for n in names])
        self.free = list(spec["fit"]["free"])
        self.free_index = np.array([names.index(n) for n in self.free])
        self.x0 = np.log10([float(spec["parameters"][n]["value"]) for n in self.free])
        self.lower = np.log10([self.model.parameters[n].min for n in self.free])
        self.upper = np.log10([self.model.parameters[n].max for n in self.free])
        self.rr = RoadRunnerModel(self.model, self.times, self.observables, names)
        self.nsim = 0

    def residuals(self, x):
        p = self.base.copy()
        p[self.free_index] = 10.0 ** x
        Y = self.rr.solve(p)
        self.nsim += 1
        return self.w * (self.y - Y[self.t_index, self.o_index])

    def run(self, x0=None):
        from scipy.optimize import least_squares
        self.nsim = 0
        res = least_squares(self.residuals, self.x0 if x0 is None else x0, method="trf",
                            bounds=(self.lower, self.upper))
        return res, self.nsim


def kinetics_fit(problem, **kw):
    # reweight=False: weights 1/|y|, the objective least_squares + libRoadRunner minimizes here, so
    # both tools solve the same problem; the default (weights at the fitted curve) is timed apart
    kw.setdefault("reweight", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(problem, profiles=False, progress=False, executor=None, **kw)


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def main():
    print("## Fit benchmark: reference fit task\n")
    print(machine_summary())
    if not (TASK / "fit.toml").exists():
        print(f"\nThe reference fit task is not at {TASK} (set KINETICS_REFERENCE): skipped.")
        return
    reps_single, reps_slow, reps_multi = (2, 1, 1) if QUICK else (20, 8, 5)

    t_spec, problem = timed(lambda: load_fit_spec(TASK))
    kinetics_fit(problem, multistart=1)                        # first call: lazy set-up, not timed
    have_rr = roadrunner_available()
    peer = RoadRunnerFit() if have_rr else None
    if peer:
        peer.run()

    # single start, interleaved repeats
    t_k, t_lm, t_nj, t_p, t_rw = [], [], [], [], []
    for i in range(reps_single):
        dt, rk = timed(lambda: kinetics_fit(problem, multistart=1))
        t_k.append(dt)
        dt, rrw = timed(lambda: kinetics_fit(problem, multistart=1, reweight=True))
        t_rw.append(dt)
        if i < reps_slow:
            dt, rlm = timed(lambda: kinetics_fit(problem, multistart=1, engine="lmfit"))
            t_lm.append(dt)
            dt, rnj = timed(lambda: kinetics_fit(problem, multistart=1, use_jacobian=False))
            t_nj.append(dt)
        if peer:
            dt, (rp, nsim_p) = timed(peer.run)
            t_p.append(dt)
    # the kinetics optimum evaluated by the peer's own objective (same data, same weights)
    x_k = np.log10(rk.values)
    if peer:
        r_at_k = peer.residuals(x_k)
        rss_peer_obj_at_k = float(r_at_k @ r_at_k)
        rss_p = float(rp.fun @ rp.fun)
        values_p = 10.0 ** rp.x

    # 20 starts, serial
    starts = 20
    from kinetics.fitting.optimize import latin_starts        # the same 20 starts for every tool
    design = latin_starts(problem, starts, 0)
    t_m, t_mlm = [], []
    for i in range(reps_multi):
        dt, rm = timed(lambda: kinetics_fit(problem, multistart=starts, seed=0))
        t_m.append(dt)
        if i == 0:
            dt, rmlm = timed(lambda: kinetics_fit(problem, multistart=starts, seed=0, engine="lmfit"))
            t_mlm.append(dt)
    if peer:
        t0 = time.perf_counter()
        best, nsim_total, at_best_p = math.inf, 0, []
        for x0 in design:
            res, nsim = peer.run(np.clip(x0, peer.lower, peer.upper))
            nsim_total += nsim
            at_best_p.append(float(res.fun @ res.fun))
            best = min(best, at_best_p[-1])
        t_pm = time.perf_counter() - t0
        n_best_p = int(np.sum(np.array(at_best_p) - best < 1e-3 * best))

    # AMICI + pyPESTO in its own interpreter, on the same task and the same 20 starts
    amici = None
    python = find_amici_python()
    if python:
        print(f"\n(measuring AMICI + pyPESTO with {python} ...)", flush=True)
        amici = run_amici_peer(task_spec(TASK, design, 2 if QUICK else 5, 1), python)
    # kinetics again after AMICI (the machine's load drifts): the multi-start median covers both
    for _ in range(1 if QUICK else 2):
        dt, rm = timed(lambda: kinetics_fit(problem, multistart=starts, seed=0))
        t_m.append(dt)

    med = np.median
    chi2 = lambda rss: rss / NOISE_REL ** 2     # noqa: E731
    print("\n### Single start (from fit.toml's start)\n")
    rows = [["kinetics `fit` (least_squares with the analytic Jacobian; compiled TRF, lmfit finishes)", fmt_time(med(t_k)),
             f"{rk.nfev} ({rk.njev} with sensitivities)", f"{rk.rss:.6g}", f"{chi2(rk.rss):.4g}"],
            ["kinetics `fit(engine=\"lmfit\")` (every step in lmfit's least_squares)", fmt_time(med(t_lm)),
             f"{rlm.nfev} ({rlm.njev} with sensitivities)", f"{rlm.rss:.6g}", f"{chi2(rlm.rss):.4g}"],
            ["kinetics `fit(use_jacobian=False)` (lmfit, finite differences)", fmt_time(med(t_nj)),
             f"{rnj.nfev}", f"{rnj.rss:.6g}", f"{chi2(rnj.rss):.4g}"],
            ["kinetics `fit`, default proportional noise (reweighted at the fitted curve: another objective)",
             fmt_time(med(t_rw)), f"{rrw.nfev} ({rrw.njev} with sensitivities)", "-", "-"]]
    if peer:
        rows.append(["scipy least_squares (trf, 2-point) + libRoadRunner", fmt_time(med(t_p)), f"{nsim_p}",
                     f"{rss_p:.6g}", f"{chi2(rss_p):.4g}"])
    for key, label in (("default", "AMICI + pyPESTO, default optimizer (L-BFGS-B)"),
                       ("ls_trf", "AMICI + pyPESTO, `ls_trf` (least squares)")):
        if amici and amici.get(key) and amici[key].get("single"):
            one = amici[key]["single"]
            rows.append([label + ", this run", fmt_time(one["median_s"]),
                         f"{one['amici_simulations']} ({one['with_sensitivities']} with sensitivities)",
                         f"{one['rss']:.6g}", f"{chi2(one['rss']):.4g}"])
    rows.append(["AMICI forward sensitivities + pyPESTO (PEERS.md, another machine)", fmt_time(AMICI_SINGLE_S),
                 "24 (+13 with sensitivities)", "-", "19.96 (PEERS.md)"])
    print(table(["method", "wall time (median)", "model evaluations", "final objective: sum of ((y - f)/y)²",
                 "chi-square (sigma = 5 % of y)"], rows))
    print(f"\nkinetics: median of {len(t_k)} fits (engine=\"lmfit\" and use_jacobian=False: {len(t_lm)}); "
          f"least_squares + libRoadRunner: median of {len(t_p)}, interleaved with them. Fit spec loading (model "
          f"compile, data checks), done once and not timed: {fmt_time(t_spec)}. The first kinetics fit "
          f"(lazy set-up) is not timed either.")
    if peer:
        print(f"\nSame-run ratio, single start: least_squares + libRoadRunner ÷ kinetics = "
              f"{paired_ratio(t_p, t_k):.1f}x (median of the per-repeat ratios; target >= 5); with "
              f"engine=\"lmfit\": {med(t_p) / med(t_lm):.1f}x. kinetics with its Jacobian needs "
              f"{rk.nfev} simulations ({rk.njev} of them with sensitivities; {rk.nfev - rk.runs[0]['nfev']} "
              f"of them lmfit's finishing steps) against {rnj.nfev} with finite differences and "
              f"{nsim_p} for least_squares + libRoadRunner.")
        print(f"\nSame minimum: kinetics' optimum scored by the peer's own objective (libRoadRunner "
              f"simulations): {rss_peer_obj_at_k:.6g}, against the peer's {rss_p:.6g}. Estimates:")
        print()
        print(table(["", *problem.free], [
            ["truth (model file)", *[f"{problem.model.parameters[n].value:.4g}" for n in problem.free]],
            ["start (fit.toml)", *[f"{10 ** v:.4g}" for v in peer.x0]],
            ["kinetics", *[f"{v:.4g}" for v in rk.values]],
            ["least_squares + libRoadRunner", *[f"{v:.4g}" for v in values_p]]]))
        print("\nk_pt and k_tp are only weakly identifiable from P and MVB: both tools move them far "
              "from the truth to the same objective value.")

    print(f"\n### Multi-start: {starts} starts (Latin hypercube in log10 space, seed 0), serial\n")
    rows = [["kinetics `fit(multistart=20, seed=0, executor=None)`", fmt_time(med(t_m)),
             f"{rm.nfev} ({rm.njev} with sensitivities)", f"{rm.n_at_best}/{starts}", f"{rm.rss:.6g}"],
            ["kinetics, `engine=\"lmfit\"`", fmt_time(med(t_mlm)),
             f"{rmlm.nfev} ({rmlm.njev} with sensitivities)", f"{rmlm.n_at_best}/{starts}", f"{rmlm.rss:.6g}"]]
    if peer:
        rows.append(["scipy least_squares + libRoadRunner, same 20 starts", fmt_time(t_pm), f"{nsim_total}",
                     f"{n_best_p}/{starts}", f"{best:.6g}"])
    amici_multi = {}
    for key, label in (("default", "AMICI + pyPESTO, default optimizer (L-BFGS-B)"),
                       ("ls_trf", "AMICI + pyPESTO, `ls_trf`")):
        if amici and amici.get(key) and amici[key].get("multi"):
            many = amici[key]["multi"]
            amici_multi[key] = many["median_s"]
            rows.append([label + ", same 20 starts, this run", fmt_time(many["median_s"]),
                         f"{many['amici_simulations']} ({many['with_sensitivities']} with sensitivities)",
                         f"{many['n_at_best']}/{starts}", f"{many['best_rss']:.6g}"])
    rows.append(["AMICI + pyPESTO, 20 starts (PEERS.md, another machine)", fmt_time(AMICI_MULTISTART_S),
                 "662 (+511 with sensitivities)", "-", "-"])
    print(table(["method", "wall time", "model evaluations", "starts at the best optimum", "best objective"], rows))
    print(f"\nkinetics: median of {len(t_m)} runs ({reps_multi} before AMICI, the rest after); engine=\"lmfit\", "
          "least_squares + libRoadRunner and AMICI: one run each. Model evaluations count simulations; "
          "for kinetics every simulation the optimizer asks for also returns the sensitivities "
          "(the Jacobian comes from the same solve).")
    if peer:
        print(f"\nSame-run ratio, 20 starts: kinetics ÷ least_squares + libRoadRunner = {med(t_m) / t_pm:.3f}.")
    for key, label in (("default", "pyPESTO's default optimizer"), ("ls_trf", "pyPESTO's ls_trf")):
        if key in amici_multi:
            print(f"Same-run ratio, 20 starts: kinetics ÷ AMICI + pyPESTO ({label}) = "
                  f"{med(t_m) / amici_multi[key]:.3f} (target <= 0.1).")
    print(f"Against the PEERS.md figure ({AMICI_MULTISTART_S} s, another machine): kinetics here ÷ that = "
          f"{med(t_m) / AMICI_MULTISTART_S:.3f}.")
    if amici:
        print(f"\nAMICI {amici['versions'].get('amici')}, pyPESTO {amici['versions'].get('pypesto')}; its model "
              f"import and compile ({amici['compile_s']:.1f} s{', done in this run' if amici.get('compiled_now') else ', loaded from its cache'}) "
              "is not in any time. The PEERS.md counts (24 simulations + 13 with sensitivities per start) "
              "are not reproduced by either pyPESTO optimizer here.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
