#!/usr/bin/env python
"""Benchmark: steady states of the reference models, kinetics against libRoadRunner in the
same run (see ../shared/reference/PEERS.md, "Steady state").

    python bench/bench_steady.py [--calls N] [--rr-calls N] [--json OUT]

Measured, each as the median time per call with new parameter values on every call
(k_sec alternates between two values, so nothing is served from a cache):

* exo_linear, exact: ``steady_plan(model).solve(p)`` (the bare fast path: A, b at p, one LAPACK
  solve of the bounded subsystem, sinks' inflow rates) and ``steady_state(compiled, p)`` (the
  public call: parameter handling, stability test, result object; eigenvalues, sensitivities
  and the settling time are computed on first access and not included); a plain
  ``numpy.linalg.solve`` of the same 4x4 system as a yardstick of the machine.
* exo_sat, nonlinear: ``steady_state`` with the default method (the cached symbolic solution
  evaluated and checked: residual, non-negativity, eigenvalues) and with ``method="newton"``
  (simulation to a horizon from the linearisation, then damped Newton on the analytic
  Jacobian).
* libRoadRunner ``steadyState()`` (NLEQ2) on exo_sat's bounded subsystem, converted with
  antimony, with default settings and with automatic moiety analysis off; and on the full
  model with its sinks, where it fails.

The requirement checked: exact exo_linear under 50 us per call, numeric exo_sat faster than
libRoadRunner. Other processes on the machine inflate all figures; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kinetics import compile_model, load_model  # noqa: E402
from kinetics.analysis.steady import steady_plan, steady_state  # noqa: E402

REFERENCE = REPO.parent / "shared" / "reference"


def model_path(name):
    shared = REFERENCE / f"{name}.toml"
    return shared if shared.exists() else REPO / "models" / f"{name}.toml"


def per_call(fn, calls, warmup=50):
    """Median and minimum seconds per call of fn(i)."""
    for i in range(warmup):
        fn(i)
    times = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        t0 = clock()
        fn(i)
        times[i] = clock() - t0
    return float(np.median(times)), float(times.min())


def antimony_text(model, drop_sinks=True):
    """The model as antimony (amounts: substanceOnly species in a unit compartment)."""
    plan = steady_plan(model)
    keep = plan.bounded_names if drop_sinks else list(model.compartments)
    lines = [f"model {model.name}", "  compartment C = 1;"]
    for name in keep:
        lines.append(f"  substanceOnly species {name} in C = {float(model.compartments[name].initial)};")
    for name, p in model.parameters.items():
        lines.append(f"  {name} = {p.value!r};")
    for name, flow in model.flows.items():
        src = flow.source if flow.source in keep else ""
        dst = flow.target if flow.target in keep else ""
        rate = str(plan.rate_exprs[plan.flow_names.index(name)]).replace("**", "^")
        lines.append(f"  J_{name}: {src} -> {dst}; {rate}")
    lines.append("end")
    return "\n".join(lines)


def roadrunner_runs(model, calls, values):
    try:
        import antimony
        import roadrunner
    except ImportError as exc:
        return {"available": False, "reason": str(exc)}
    out = {"available": True, "version": roadrunner.__version__}

    def load(drop_sinks):
        antimony.clearPreviousLoads()
        if antimony.loadAntimonyString(antimony_text(model, drop_sinks)) < 0:
            raise RuntimeError(antimony.getLastError())
        return antimony.getSBMLString(model.name)

    sbml = load(True)
    for label, settings in (("default", {}), ("no_auto_moiety", {"auto_moiety_analysis": False})):
        rr = roadrunner.RoadRunner(sbml)
        solver = rr.getSteadyStateSolver()
        for key, value in settings.items():
            solver.setValue(key, value)

        def run(i):
            rr.reset()
            rr["k_sec"] = values[i % 2]
            rr.steadyState()
        med, best = per_call(run, calls, warmup=1)
        amounts = rr.getFloatingSpeciesAmountsNamedArray()
        out[label] = {"median_s": med, "min_s": best,
                      "values": dict(zip(amounts.colnames, map(float, amounts[0])))}
    rr = roadrunner.RoadRunner(load(False))
    try:
        rr.steadyState()
        out["full_model"] = "solved (unexpected)"
    except Exception as exc:  # noqa: BLE001 - we report whatever it says
        out["full_model"] = "fails: " + str(exc).strip().splitlines()[0][:160]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per fast measurement (default 20000)")
    parser.add_argument("--rr-calls", type=int, default=7, help="libRoadRunner steadyState() calls (default 7)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    results = {"load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}

    # ---------------------------------------------------------------- exo_linear, exact
    lin = load_model(model_path("exo_linear"))
    c = compile_model(lin)
    plan = steady_plan(c)
    k_sec = c.parameter_names.index("k_sec")
    ps = [c.default_parameters.copy(), c.default_parameters.copy()]
    ps[1][k_sec] = 0.25
    x, r = plan.solve(ps[0])
    assert np.allclose(x, [1250, 625, 6.25, 25], rtol=1e-12) and np.allclose(r, [500, 125], rtol=1e-12)
    fast = per_call(lambda i: plan.solve(ps[i % 2]), args.calls)
    api = per_call(lambda i: steady_state(c, ps[i % 2]), args.calls)
    A, b, _, _ = plan.matrices(ps[0])
    yard = per_call(lambda i: np.linalg.solve(A, -b), args.calls)
    full = per_call(lambda i: steady_state(c, ps[i % 2]).to_dict(), 200, warmup=5)
    results["exo_linear"] = {"fast_path_s": fast[0], "steady_state_s": api[0], "numpy_solve_s": yard[0],
                             "complete_to_dict_s": full[0]}

    # ------------------------------------------------------------------- exo_sat, numeric
    sat = load_model(model_path("exo_sat"))
    cs = compile_model(sat)
    k_sec_s = cs.parameter_names.index("k_sec")
    qs = [cs.default_parameters.copy(), cs.default_parameters.copy()]
    qs[1][k_sec_s] = 0.25
    t0 = time.perf_counter()
    first = steady_state(cs, qs[0])
    first_call = time.perf_counter() - t0
    expected = {"EE": 1250.0, "MVB": 625.0, "P": 125 * 50 / 275, "T": 500 * 50 / 275}
    assert all(abs(first.values[k] / v - 1) < 1e-10 for k, v in expected.items()), first.values
    steady_state(cs, qs[0], method="newton")
    sym = per_call(lambda i: steady_state(cs, qs[i % 2]), max(args.calls // 10, 200))
    newton = per_call(lambda i: steady_state(cs, qs[i % 2], method="newton"), max(args.calls // 100, 50), warmup=5)
    check = steady_state(cs, qs[1], method="newton").values
    rr = roadrunner_runs(sat, args.rr_calls, (0.2, 0.25))
    results["exo_sat"] = {"first_call_s": first_call, "symbolic_s": sym[0], "newton_s": newton[0], "roadrunner": rr}

    # -------------------------------------------------------------------------- report
    us = 1e6
    print(f"steady-state benchmark (load average {results['load_average']:.2f}; "
          f"OMP/OpenBLAS threads {os.environ['OMP_NUM_THREADS']}/{os.environ['OPENBLAS_NUM_THREADS']})")
    print("\nexo_linear (affine, sinks LYS and U reported by inflow rate), median per call:")
    print(f"  kinetics fast path  steady_plan(m).solve(p)      {fast[0] * us:9.1f} us   (min {fast[1] * us:.1f})")
    print(f"  kinetics            steady_state(m, p)           {api[0] * us:9.1f} us   (min {api[1] * us:.1f})")
    print(f"  yardstick           numpy.linalg.solve 4x4       {yard[0] * us:9.1f} us   (PEERS.md: 10 us)")
    print(f"  complete result     steady_state(...).to_dict()  {full[0] * us:9.1f} us   (eigenvalues, sensitivities, settling time)")
    verdict = "PASS" if api[0] < 50e-6 else "FAIL"
    print(f"  requirement: exact steady state under 50 us per call: {verdict} ({api[0] * us:.1f} us via steady_state, "
          f"{fast[0] * us:.1f} us fast path)")
    print("\nexo_sat (saturable clearance), median per call:")
    print(f"  kinetics  symbolic (default)    {sym[0] * 1e3:9.3f} ms   (first call incl. sympy solve: {first_call:.2f} s)")
    print(f"  kinetics  Newton from simulation {newton[0] * 1e3:8.3f} ms   (P = {check['P']:.6g} at k_sec = 0.25)")
    if rr.get("available"):
        for label in ("default", "no_auto_moiety"):
            fig = rr[label]
            print(f"  libRoadRunner {rr['version']} steadyState() [{label}] {fig['median_s'] * 1e3:9.1f} ms   "
                  f"(P = {fig['values'].get('P', float('nan')):.6g})")
        best_rr = min(rr["default"]["median_s"], rr["no_auto_moiety"]["median_s"])
        print(f"  libRoadRunner on the full model with sinks: {rr['full_model']}")
        print(f"  ratios: libRoadRunner (best settings) / kinetics Newton = {best_rr / newton[0]:.0f}x, "
              f"/ kinetics symbolic = {best_rr / sym[0]:.0f}x")
        verdict = "PASS" if newton[0] < best_rr and sym[0] < best_rr else "FAIL"
        print(f"  requirement: numeric exo_sat faster than libRoadRunner in the same run: {verdict}")
    else:
        print(f"  libRoadRunner not importable ({rr['reason']}); PEERS.md reference: NLEQ2 74 ms (225 ms default settings)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
