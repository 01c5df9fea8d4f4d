"""Run the AMICI + pyPESTO peer (``peer_amici.py``) from the main benchmark.

AMICI compiles each model to C++ and builds from source, so it usually lives in its own
virtual environment; the fit benchmark hands it the problem as JSON and reads its figures back:

    from amici_peer import find_amici_python, run_amici_peer, task_spec
    python = find_amici_python()            # KINETICS_AMICI_PYTHON, or this interpreter
    if python:
        figures = run_amici_peer(task_spec(TASK, starts, 20, 3), python)   # None if it cannot run

Only ``task_spec`` needs kinetics; the rest uses the standard library, so the peer scripts, which
run in AMICI's interpreter, share ``print_json_only`` from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPT = BENCH / "peer_amici.py"
RTOL, ATOL = 1e-8, 1e-10          # as in PEERS.md


def find_amici_python() -> str | None:
    """The interpreter that runs the AMICI peer: ``KINETICS_AMICI_PYTHON`` if set, else the
    current interpreter if it can import amici and pypesto, else None."""
    env = os.environ.get("KINETICS_AMICI_PYTHON")
    if env:
        return env
    try:
        import amici  # noqa: F401
        import pypesto  # noqa: F401
        return sys.executable
    except ImportError:
        return None


def _env(python: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # AMICI compiles models with its own environment's swig and cmake: that bin folder goes first
    # (the interpreter's folder as given, not resolved: a venv's python is a symlink)
    env["PATH"] = str(Path(python).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    return env


def run_amici_peer(problem_spec: dict, python: str, timeout: float = 900) -> dict | None:
    """Run ``peer_amici.py`` with ``python`` on ``problem_spec`` (see ``task_spec``) and return
    its figures, or None (with a one-line reason printed) if it cannot run there.

    The figures: ``versions``, ``compile_s`` (model import and compile, or loading it from the
    cache; not in any fit time), and per optimizer (``default``: pyPESTO's default L-BFGS-B;
    ``ls_trf``: its least-squares variant) a ``single`` and a ``multi`` dict with ``median_s``,
    ``seconds``, ``n_fval``/``n_grad``/``n_res``/``n_sres``, ``amici_simulations``,
    ``with_sensitivities``, ``rss`` (single) or ``best_rss``/``n_at_best`` (multi)."""
    if not python or not Path(python).exists():
        print(f"AMICI + pyPESTO not measured: no Python interpreter at {python!r} "
              "(set KINETICS_AMICI_PYTHON).")
        return None
    env = _env(python)
    try:
        check = subprocess.run([python, "-c", "import amici, pypesto"], capture_output=True, text=True,
                               env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"AMICI + pyPESTO not measured: {python} does not run ({exc}).")
        return None
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"AMICI + pyPESTO not measured: {python} cannot import amici and pypesto ({last}).")
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="amici_peer_", delete=False) as f:
        json.dump(problem_spec, f)
        path = f.name
    try:
        proc = subprocess.run([python, str(SCRIPT), path], capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"AMICI + pyPESTO not measured: peer_amici.py did not finish within {timeout:.0f} s.")
        return None
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        print(f"AMICI + pyPESTO not measured: peer_amici.py failed (exit {proc.returncode}): {tail}")
        return None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"AMICI + pyPESTO not measured: peer_amici.py printed no JSON: {proc.stdout.strip()[-200:]!r}")
        return None


def task_spec(task_dir, starts_log10, reps_single: int, reps_multi: int, *, rtol: float = RTOL,
              atol: float = ATOL, cache_dir=None) -> dict:
    """The JSON payload of ``peer_amici.py`` for a fit task folder (fit.toml + data CSV), read
    with kinetics' own loaders: SBML of the model, the free parameters with their log10 bounds
    and start, the other parameters' values, the data rows and the multi-start design
    (``starts_log10``: log10 vectors in the order of fit.toml's free list, e.g. kinetics'
    ``latin_starts``). Compiled models are cached in ``cache_dir`` (default: the
    ``KINETICS_AMICI_CACHE`` variable, else a folder in the system's temporary directory)."""
    import csv
    import tomllib

    import numpy as np

    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from common import sbml_text
    from kinetics.fitting.problem import load_fit_spec

    task_dir = Path(task_dir)
    problem = load_fit_spec(task_dir)
    model = problem.model
    if not np.all(problem.log_mask):
        raise ValueError("the AMICI peer fits every free parameter on log10 scale; this task has linear ones")
    lower, upper = problem.internal_bounds()
    values = dict(zip(problem.fit_names, map(float, problem.fit_values)))
    fixed = {n: values.get(n, float(p.value)) for n, p in model.parameters.items() if n not in problem.free}
    spec_path = task_dir / "fit.toml" if task_dir.is_dir() else task_dir
    spec = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    with open(spec_path.parent / spec["data"], newline="") as f:
        rows = [(float(r["time"]), r["observable"], float(r["value"])) for r in csv.DictReader(f)]
    unknown = {o for _, o, _ in rows} - set(model.compartments)
    if unknown:
        raise ValueError(f"the AMICI peer observes compartments only; not compartments: {sorted(unknown)}")
    if cache_dir is None:
        cache_dir = (os.environ.get("KINETICS_AMICI_CACHE")
                     or Path(tempfile.gettempdir()) / "kinetics_amici_cache")
    return {
        "model_name": model.name,
        "sbml": sbml_text(model),
        "free": list(problem.free),
        "lower_log10": [float(v) for v in lower],
        "upper_log10": [float(v) for v in upper],
        "fixed": fixed,
        "data": [{"time": t, "observable": o, "value": v} for t, o, v in rows],
        "noise_rel": 0.05,
        "start_log10": [float(v) for v in problem.start()],
        "starts_log10": [[float(v) for v in x] for x in starts_log10],
        "reps_single": int(reps_single),
        "reps_multi": int(reps_multi),
        "rtol": float(rtol),
        "atol": float(atol),
        "cache_dir": str(cache_dir),
    }


def print_json_only(main, argv: list, usage: str) -> None:
    """Run a peer script's ``main(path)`` and print its figures as the one line of JSON on stdout.

    Everything else (AMICI's compiler and cmake, which run in subprocesses, pyPESTO's messages and
    warnings) goes to stderr, redirected at the file-descriptor level, so the caller can parse
    stdout.
    """
    if len(argv) != 2:
        sys.exit(usage)
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figures = main(argv[1])
    json_out.write(json.dumps(figures) + "\n")
    json_out.flush()
