"""Run every ``bench_*.py`` in this folder in turn, each in its own interpreter.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

``--quick`` (few repetitions, to check that the scripts run) reaches the scripts as
``BENCH_QUICK=1``; ``--only`` picks scripts whose name contains NAME. Each script runs with its
defaults. Exit status: non-zero if any benchmark failed.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent


def main(argv):
    only = []
    env = dict(os.environ)
    args = iter(argv)
    for a in args:
        if a == "--only":
            only.append(next(args, ""))
        elif a == "--quick":
            env["BENCH_QUICK"] = "1"
        else:
            print(f"run_all.py: unknown argument {a!r}", file=sys.stderr)
            return 2
    scripts = sorted(BENCH.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(o in s.stem for o in only)]
    results = []
    for script in scripts:
        print(f"\n{'=' * 20} {script.name} {'=' * 20}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=str(BENCH.parent), env=env)
        results.append((script.name, rc, time.perf_counter() - t0))
    print(f"\n{'=' * 20} summary {'=' * 20}")
    for name, rc, dt in results:
        print(f"{name:<24} {'ok' if rc == 0 else f'FAILED (exit {rc})':<18} {dt:7.1f} s")
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
