"""Dask scaling: a 40-start fit with profiles of a bundled case, serial in this process against
a dask.distributed LocalCluster with 1 and 2 worker processes (one thread each).

    .venv/bin/python bench/bench_dask.py [--quick] [--case NAME] [--starts N]

Per executor: wall time of the fit (starts + profiles), its speed-up over the serial run, and
the overhead per task, (wall on 1 worker - serial wall) / tasks: what scheduling, pickling and
the round trips add to each task when the work itself is the same. Each cluster first runs one
fit that is not timed (worker start-up, loading the compiled kernels, the one build of the
problem per worker). Estimates and intervals are checked against the serial run (1e-8).
Needs the dask extra (pip install -e '.[dask]').
"""

from __future__ import annotations

import logging
import sys
import time

from common import QUICK, ROOT, machine_summary, table  # noqa: E402  (sets the BLAS threads first)

import numpy as np  # noqa: E402

from kinetics.fitting.optimize import fit  # noqa: E402
from kinetics.fitting.problem import load_fit_spec, rebuild_stats  # noqa: E402


def _arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def timed_fit(problem, starts, executor, repeats):
    best, result = None, None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fit(problem, multistart=starts, seed=0, executor=executor, progress=False)
        seconds = time.perf_counter() - t
        best = seconds if best is None else min(best, seconds)
    return best, result


def same(a, b):
    if not np.allclose(a.x, b.x, rtol=1e-8, atol=0):
        return False
    for name in a.problem.free:
        for u, v in zip(a.ci95[name], b.ci95[name]):
            if (u is None) != (v is None) or (u is not None and abs(u - v) > 1e-8 * abs(v)):
                return False
    return True


def main():
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("bench_dask.py needs dask.distributed: pip install -e '.[dask]'", file=sys.stderr)
        return 1
    case = _arg("--case", "culture_rab27a")
    starts = int(_arg("--starts", 10 if QUICK else 40))
    repeats = 1 if QUICK else 3
    problem = load_fit_spec(ROOT / "fits" / case)
    print(machine_summary())
    print(f"\ncase {case}: {len(problem.free)} free parameters, {problem.n_data} data points, {starts} starts "
          f"+ profiles; best of {repeats} runs each\n")
    fit(problem, multistart=2, executor=None, progress=False)          # this process: kernels loaded
    serial_s, serial = timed_fit(problem, starts, None, repeats)
    # tasks on an executor: every start but the first (run here), and one per parameter and side
    tasks = starts - 1 + 2 * len(problem.free)
    rows = [["serial (this process)", f"{serial_s:.2f} s", "1.00", "", "", "yes"]]
    per_task_1 = None
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            executor = client.get_executor()
            t = time.perf_counter()
            fit(problem, multistart=starts, seed=0, executor=executor, progress=False)    # cold: not timed
            cold = time.perf_counter() - t
            seconds, result = timed_fit(problem, starts, executor, repeats)
            builds = sum(s["builds"] for s in client.run(rebuild_stats).values())
        overhead = (seconds - serial_s) / tasks
        if workers == 1:
            per_task_1 = overhead
        rows.append([f"LocalCluster, {workers} worker{'s' if workers > 1 else ''}", f"{seconds:.2f} s",
                     f"{serial_s / seconds:.2f}", f"{cold:.2f} s",
                     f"{overhead * 1e3:.1f} ms" if workers == 1 else "", f"{'yes' if same(result, serial) else 'NO'}"
                     f" ({builds} builds)"])
    print(table(["executor", "wall (fit + profiles)", "speed-up", "first fit on a new cluster",
                 "overhead per task", "same estimates and intervals"], rows))
    print(f"\n{tasks} tasks per fit; serial time per task {serial_s / (starts + 2 * len(problem.free)) * 1e3:.1f} ms; "
          f"overhead per task on 1 worker {per_task_1 * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
