"""First run after installing (issue 12): the first fit with numba's cache empty, and the CPU
seconds each kernel group takes to compile.

    .venv/bin/python bench/bench_first_run.py [--quick] [--runs N]

Every measurement runs in a new interpreter with ``NUMBA_CACHE_DIR`` pointing at a new empty
folder (numba then neither reads nor writes the cache beside the package), so it sees what a
user sees right after ``pip install``: kernels compile when first used. CPU time is user + sys of
that interpreter (``resource.getrusage``), robust to other jobs on the machine; wall time is not.

* **First fit**: load the demo case ``fits/culture_rab27a`` and ``fit`` it (multi-start and
  profiles, as ``kinetics demo`` does), then the same again with the cache now filled.
  By default (``KINETICS_COMPILE=background``) the trust-region kernels compile in a background
  process while the first fit runs on scipy's ``least_squares``; the table also gives the
  first fit with every group compiled in the fitting process (``KINETICS_COMPILE=foreground``,
  the behaviour before) and how long after the first fit ended the background compilation was
  done.
* **Kernel groups**: each group's entry on a tiny problem, in the order a user meets them, in
  one interpreter; each figure is the increment over the groups before it (groups share kernels).
  The names are those of the first-use notice (``kinetics/numerics/compile_notice.py``).
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from common import QUICK, fresh_subprocess_json, machine_summary, table  # noqa: E402

FIRST_FIT = r"""
import json, resource, time
start = time.perf_counter()
from numba.core import event
compiling = []
class Listener(event.Listener):
    depth = 0
    def on_start(self, e):
        if self.depth == 0:
            self.t = time.process_time()
        self.depth += 1
    def on_end(self, e):
        self.depth -= 1
        if self.depth == 0:
            compiling.append(time.process_time() - self.t)
event.register("numba:compile", Listener())
import kinetics
from kinetics.fitting.optimize import fit
from kinetics.fitting.problem import load_fit_spec
from kinetics.model.library import models_dir
problem = load_fit_spec(models_dir().parent / "fits" / "culture_rab27a")
result = fit(problem)
usage = resource.getrusage(resource.RUSAGE_SELF)
from kinetics.numerics import compile_notice, trust_region
print(json.dumps({"wall": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
                  "compile": sum(compiling), "chi2": float(result.chisqr),
                  "lock": compile_notice.lock_path(trust_region._step, "the trust-region")}))
"""

GROUPS = r"""
import json, time
import numpy as np, sympy as sp
from kinetics.numerics import linear, linear_batch, rosenbrock, rosenbrock_lanes, trust_region
from kinetics.codegen.tape import build_tapes
A = np.array([[-1.0, 0.0], [1.0, -2.0]])
series = (np.eye(2), np.zeros(2), np.zeros((0, 2, 2)), np.zeros((0, 2)), np.array([0, 1], dtype=np.intp))
B, b = np.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]]), np.array([1.0, 2.0, 3.0])
t, x, k = sp.symbols("t x k")
rhs, jac, _ = build_tapes([-k * x], t, [x], [k])
def exact():
    linear.affine_rows(A, np.ones(2), np.zeros(2), np.array([0.0, 1.0]), np.ones((1, 2, 2)), np.ones((1, 2)),
                       np.ones((1, 1)), np.zeros((2, 1)), series, np.array([0, 1], dtype=np.intp))
    linear.solve_affine(A, np.ones(2), np.zeros(2), np.array([0.0, 1.0]))
steps = [
    ("the exact-solution", exact),
    ("the trust-region", lambda: trust_region.least_squares_trf(lambda z: (B @ z - b, B), np.zeros(2),
                                                                np.array([0.0, -np.inf]), np.array([0.5, np.inf]))),
    ("the stiff-integrator", lambda: rosenbrock.integrate(rhs, jac, np.ones(1), np.ones(1), 0.0, np.array([0.0, 1.0]),
                                                          1e-6, 1e-9)),
    ("the ensemble exact-solution", lambda: linear_batch.solve_sets(
        np.repeat(A[None], 3, 0), np.ones((3, 2)), np.zeros((3, 2)), np.array([0.5, 1.0]), 1e5, np.empty((3, 2, 2)),
        np.zeros(3, dtype=bool))),
    ("the ensemble stiff-integrator", lambda: rosenbrock_lanes.integrate_many(
        rhs, jac, np.ones((3, 1)), np.ones((3, 1)), 0.0, np.array([0.5, 1.0]), 1e-6, 1e-9)),
    ("the matrix-exponential (ensemble; shared with a single simulation)", lambda: linear_batch.solve_sets_expm(
        np.repeat(A[None], 3, 0), np.ones((3, 2)), np.zeros((3, 2)), np.array([0.5, 1.0]), np.empty((3, 2, 2)))),
]
out = {}
for name, call in steps:
    start = time.process_time()
    call()
    out[name] = time.process_time() - start
print(json.dumps(out))
"""


def empty_cache():
    return {"NUMBA_CACHE_DIR": tempfile.mkdtemp(prefix="kinetics-first-run-")}


def main():
    runs = 1 if QUICK else 2
    if "--runs" in sys.argv:
        runs = int(sys.argv[sys.argv.index("--runs") + 1])
    print(f"## First run ({machine_summary()})")
    rows = []
    for r in range(runs):
        env = empty_cache()
        first = fresh_subprocess_json(FIRST_FIT, env={**env, "KINETICS_COMPILE": "background"}, timeout=1800)
        ended = time.perf_counter()
        while os.path.exists(first["lock"]) and time.perf_counter() - ended < 1800:
            time.sleep(0.5)
        background_done = time.perf_counter() - ended
        again = fresh_subprocess_json(FIRST_FIT, env=env, timeout=1800)
        before = fresh_subprocess_json(FIRST_FIT, env={**empty_cache(), "KINETICS_COMPILE": "foreground"}, timeout=1800)
        rows.append([str(r + 1), f"{first['wall']:.1f} s", f"{first['cpu']:.1f} s", f"{first['compile']:.1f} s",
                     f"{background_done:.1f} s", f"{before['wall']:.1f} s", f"{before['cpu']:.1f} s",
                     f"{again['wall']:.1f} s", f"{again['cpu']:.1f} s", f"{os.getloadavg()[0]:.1f}"])
        print(f"  run {r + 1}: chi2 {first['chi2']:.6g} (empty cache, background), {before['chi2']:.6g} "
              f"(empty cache, foreground), {again['chi2']:.6g} (filled)", flush=True)
    print("\n### The first fit after installing (demo case culture_rab27a, multi-start and profiles)\n")
    print(table(["run", "wall, empty cache", "CPU, empty cache", "of which compiling",
                 "background compilation done after", "wall, all compiled in the process",
                 "CPU, all compiled in the process", "wall, cache filled", "CPU, cache filled",
                 "load average after"], rows))
    groups = fresh_subprocess_json(GROUPS, env={**empty_cache(), "KINETICS_COMPILE": "foreground"}, timeout=1800)
    print("\n### CPU seconds to compile each kernel group (empty cache; increments, in this order)\n")
    print(table(["group", "CPU"], [[name, f"{seconds:.1f} s"] for name, seconds in groups.items()]))
    print(f"\nTarget (issue 12): the first fit after installing under 20 s. Load average at the end: "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
