"""Shared helpers of the benchmarks: paths, timing, peers (scipy, libRoadRunner), references.

Every ``bench_*.py`` sets ``OMP_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=1`` before numpy is
imported (multithreaded BLAS on a 2-core machine slows small matrix work badly); importing this
module first does the same.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import datetime
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import kinetics  # noqa: E402

#: The reference tasks (``../shared/reference`` beside the repository; override with
#: ``KINETICS_REFERENCE``). Without it the two reference models come from ``models/``
#: (verbatim copies) and the fit benchmark is skipped.
REFERENCE = Path(os.environ.get("KINETICS_REFERENCE", ROOT.parent / "shared" / "reference"))

#: ``--quick`` (or ``BENCH_QUICK=1``): few repetitions, for checking that the scripts run.
QUICK = "--quick" in sys.argv or os.environ.get("BENCH_QUICK", "") not in ("", "0")

RTOL, ATOL = 1e-8, 1e-10          # as in PEERS.md, for every integrator
FIT_TIMES = np.logspace(-1, math.log10(48), 20)   # the fitting inner loop's output times


def reference_model_path(name: str) -> Path:
    path = REFERENCE / f"{name}.toml"
    return path if path.exists() else ROOT / "models" / f"{name}.toml"


# ----------------------------------------------------------------------------- reporting
def machine_summary() -> str:
    import scipy
    parts = [f"date {datetime.date.today().isoformat()}", f"{os.cpu_count()} cores",
             f"Python {platform.python_version()}", f"numpy {np.__version__}", f"scipy {scipy.__version__}"]
    try:
        import roadrunner
        parts.append(f"libRoadRunner {roadrunner.__version__}")
    except ImportError:
        parts.append("libRoadRunner not installed")
    try:
        import numba
        parts.append(f"numba {numba.__version__}")
    except ImportError:
        pass
    try:
        parts.append("load average %.1f/%.1f/%.1f" % os.getloadavg())
    except OSError:
        pass
    parts.append(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    return ", ".join(parts)


def table(header, rows) -> str:
    """A markdown table (strings as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_time(seconds) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_err(err) -> str:
    if err is None:
        return "-"
    if not np.isfinite(err):
        return "nan/inf"
    return "0" if err == 0 else f"{err:.1e}"


def fmt_ratio(r) -> str:
    if r is None or not np.isfinite(r):
        return "-"
    if r < 0.1:
        return f"{r:.2g}"
    return f"{r:.2f}" if r < 10 else f"{r:.1f}"


# ------------------------------------------------------------------------------ timing
def interleaved(cases: dict, rounds: int, per_round: int, warmup: int = 3) -> dict:
    """Time each callable ``f(i)`` (``i`` the call number, to pick new parameter values) in
    interleaved rounds, so that load on a shared machine falls on every case alike.

    Returns name -> array (rounds, per_round) of per-call seconds."""
    names = list(cases)
    for name in names:
        for i in range(warmup):
            cases[name](i)
    out = {name: [] for name in names}
    i = 0
    clock = time.perf_counter
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]   # rotate who goes first
        for name in order:
            f = cases[name]
            for j in range(per_round):
                k = i + j
                t0 = clock()
                f(k)
                out[name].append(clock() - t0)
        i += per_round
    return {name: np.array(v).reshape(rounds, per_round) for name, v in out.items()}


def cpu_microseconds(todo: dict, rounds: int, calls: int) -> dict:
    """Median CPU microseconds per call of each callable in ``todo`` (one run makes ``calls``
    calls), over ``rounds`` rounds that run every callable once in turn (already compiled)."""
    times = {name: [] for name in todo}
    for _ in range(rounds):
        for name, run in todo.items():
            start = time.process_time()
            run()
            times[name].append((time.process_time() - start) / calls * 1e6)
    return {name: round(float(np.median(t)), 1) for name, t in times.items()}


def median(a) -> float:
    return float(np.median(a))


def paired_ratio(a, b) -> float:
    """Time ratio a / b robust to load that changes during the run: the median over rounds
    (or repeats) of the ratio of the two per-round medians, measured side by side."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    return float(np.median(np.median(a, axis=1) / np.median(b, axis=1)))


def spread(a) -> str:
    q1, q3 = np.percentile(a, [25, 75])
    return f"{fmt_time(q1)}-{fmt_time(q3)}"


def perturbed(p0, count: int, seed: int = 0, low: float = 0.9, high: float = 1.1) -> np.ndarray:
    """``count`` parameter vectors: each entry of ``p0`` times a factor in [low, high] (seeded)."""
    rng = np.random.default_rng(seed)
    return np.asarray(p0, dtype=float) * rng.uniform(low, high, size=(count, len(p0)))


# ------------------------------------------------------------------------------ errors
def max_scaled_error(X, ref) -> float:
    """Max |X - ref| relative to each compartment's largest value over the time course (the
    error an absolute tolerance allows; small values do not inflate it)."""
    ref = np.asarray(ref, dtype=float)
    scale = np.abs(ref).max(axis=0)
    keep = scale > 0
    if not keep.any():
        return 0.0
    err = np.abs(np.asarray(X, dtype=float) - ref)[:, keep] / scale[keep]
    return float(err.max()) if np.isfinite(err).all() else math.inf


def max_rel_error(X, ref, floor: float = 1e-12) -> float:
    """Max |X - ref| / |ref| over points where |ref| exceeds ``floor`` times its compartment's
    maximum (|ref| over the time course); compartments that stay 0 are skipped."""
    X = np.asarray(X, dtype=float)
    ref = np.asarray(ref, dtype=float)
    scale = np.abs(ref).max(axis=0, keepdims=True)
    mask = (np.abs(ref) > floor * scale) & (scale > 0)
    if not mask.any():
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(X - ref) / np.abs(ref)
    rel = rel[mask]
    return float(np.max(rel)) if np.isfinite(rel).all() else math.inf


# --------------------------------------------------------------- plain scipy (the baseline)
class ScipyModel:
    """What a user writes without kinetics: the model's ODEs as sympy expressions, lambdified
    RHS and Jacobian, and ``scipy.integrate.solve_ivp``."""

    def __init__(self, model):
        import sympy as sp
        odes = model.odes()                                # state name -> sympy expression
        self.state_names = list(odes)
        self.parameter_names = list(model.parameter_names)
        by_name = {}
        for e in odes.values():
            for s in e.free_symbols:
                by_name[s.name] = s
        t = sp.Symbol("t", real=True)
        y = [by_name.get(n, sp.Symbol(n, real=True)) for n in self.state_names]
        p = [by_name.get(n, sp.Symbol(n, real=True)) for n in self.parameter_names]
        rhs = sp.Matrix(list(odes.values()))
        self._f = sp.lambdify((t, y, p), list(rhs), "numpy")
        self._J = sp.lambdify((t, y, p), rhs.jacobian(y), "numpy")
        self.n = len(y)

    def rhs(self, p):
        f, pl = self._f, list(p)
        return lambda t, y: np.asarray(f(t, y, pl), dtype=float)

    def jac(self, p):
        J, pl = self._J, list(p)
        return lambda t, y: np.asarray(J(t, y, pl), dtype=float)

    def affine(self, p):
        """(A, b) of dx/dt = A x + b for a linear model (from the lambdified RHS/Jacobian)."""
        z = np.zeros(self.n)
        return self.jac(p)(0.0, z), self.rhs(p)(0.0, z)

    def solve(self, p, x0, times, method="LSODA", rtol=RTOL, atol=ATOL, jac=True):
        from scipy.integrate import solve_ivp
        sol = solve_ivp(self.rhs(p), (0.0, float(times[-1])), x0, method=method, t_eval=times,
                        rtol=rtol, atol=atol, jac=self.jac(p) if jac else None)
        if not sol.success:
            raise RuntimeError(sol.message)
        return sol.y.T


# ------------------------------------------------------------------------- libRoadRunner
def _mathml(expr) -> str:
    """Content MathML of a sympy expression (the subset compartment models use)."""
    import sympy as sp
    if isinstance(expr, sp.Symbol):
        return f"<ci> {expr.name} </ci>"
    if expr.is_Number:
        return f"<cn> {float(expr)!r} </cn>"
    if isinstance(expr, sp.Add):
        return "<apply><plus/>" + "".join(_mathml(a) for a in expr.args) + "</apply>"
    if isinstance(expr, sp.Mul):
        return "<apply><times/>" + "".join(_mathml(a) for a in expr.args) + "</apply>"
    if isinstance(expr, sp.Pow):
        return "<apply><power/>" + _mathml(expr.base) + _mathml(expr.exp) + "</apply>"
    names = {sp.exp: "exp", sp.log: "ln", sp.Abs: "abs"}
    if expr.func in names:
        return f"<apply><{names[expr.func]}/>" + _mathml(expr.args[0]) + "</apply>"
    raise NotImplementedError(f"no SBML translation for {expr.func.__name__} in the benchmark")


def sbml_text(model) -> str:
    """SBML Level 3 of a kinetics model: one unit-volume compartment, compartments as species
    in amounts (hasOnlySubstanceUnits), flows as irreversible reactions with the same rates.
    Written directly, so libRoadRunner needs neither antimony nor libsbml's Python bindings."""
    from kinetics.model.expressions import parse_expression
    import sympy as sp
    symbols = {n: sp.Symbol(n, real=True) for n in [*model.compartments, *model.parameters]}
    species, params, reactions = [], [], []
    for c in model.compartments.values():
        initial = float(c.initial)            # numbers only (true of the reference models)
        species.append(f'<species id="{c.name}" compartment="vol__" initialAmount="{initial!r}" '
                       'hasOnlySubstanceUnits="true" boundaryCondition="false" constant="false"/>')
    for p in model.parameters.values():
        params.append(f'<parameter id="{p.name}" value="{float(p.value)!r}" constant="true"/>')
    for f in model.flows.values():
        rate = parse_expression(f.rate, symbols)
        parts = [f'<reaction id="R_{f.name}" reversible="false" fast="false">']
        if f.source:
            parts.append(f'<listOfReactants><speciesReference species="{f.source}" stoichiometry="1" constant="true"/></listOfReactants>')
        if f.target:
            parts.append(f'<listOfProducts><speciesReference species="{f.target}" stoichiometry="1" constant="true"/></listOfProducts>')
        parts.append('<kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML">' + _mathml(rate) + "</math></kineticLaw>")
        parts.append("</reaction>")
        reactions.append("".join(parts))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" version="1">'
            f'<model id="{model.name}">'
            '<listOfCompartments><compartment id="vol__" spatialDimensions="3" size="1" constant="true"/></listOfCompartments>'
            f'<listOfSpecies>{"".join(species)}</listOfSpecies>'
            f'<listOfParameters>{"".join(params)}</listOfParameters>'
            f'<listOfReactions>{"".join(reactions)}</listOfReactions>'
            "</model></sbml>")


def roadrunner_available() -> bool:
    try:
        import roadrunner  # noqa: F401
        return True
    except ImportError:
        return False


class RoadRunnerModel:
    """libRoadRunner (LLVM-compiled model, CVODE) on the same model: per call reset, set all
    parameters, simulate at the output times (CVODE BDF, rtol 1e-8, atol 1e-10)."""

    def __init__(self, model, times, state_names, parameter_names, rtol=RTOL, atol=ATOL):
        import roadrunner
        self.rr = rr = roadrunner.RoadRunner(sbml_text(model))
        rr.integrator.relative_tolerance = rtol
        rr.integrator.absolute_tolerance = atol
        rr.timeCourseSelections = ["time", *state_names]
        ids = list(rr.model.getGlobalParameterIds())
        self._perm = np.array([list(parameter_names).index(i) for i in ids])
        times = np.asarray(times, dtype=float)
        # simulate(times=...) starts at times[0]: start at 0 and drop that row
        self._skip = 1 if times[0] > 0 else 0
        self._times = np.concatenate([[0.0], times]) if self._skip else times
        self._set = rr.model.setGlobalParameterValues

    def solve(self, p):
        rr = self.rr
        rr.reset()
        self._set(np.asarray(p, dtype=float)[self._perm])
        out = rr.simulate(times=self._times)
        return np.asarray(out)[self._skip:, 1:]


# --------------------------------------------------------------------------- references
def mp_affine(A, b, x0, times, dps: int = 30, uniform: bool = False) -> np.ndarray:
    """Exact solution of x' = A x + b (A, b as given in double precision) by mpmath at ``dps``
    digits: the exponential of the augmented matrix [[A, b], [0, 0]]. With ``uniform`` (an
    evenly spaced grid) one exponential of the step is applied repeatedly."""
    import mpmath
    n = len(x0)
    with mpmath.workdps(dps):
        M = mpmath.zeros(n + 1, n + 1)
        for i in range(n):
            for j in range(n):
                M[i, j] = mpmath.mpf(float(A[i, j]))
            M[i, n] = mpmath.mpf(float(b[i]))
        z0 = mpmath.matrix([mpmath.mpf(float(v)) for v in x0] + [1])
        out = np.empty((len(times), n))
        if uniform:
            h = mpmath.mpf(float(times[1])) - mpmath.mpf(float(times[0]))
            z = mpmath.expm(M * mpmath.mpf(float(times[0]))) * z0
            E = mpmath.expm(M * h)
            for k in range(len(times)):
                if k:
                    z = E * z
                out[k] = [float(z[i]) for i in range(n)]
        else:
            for k, t in enumerate(times):
                z = mpmath.expm(M * mpmath.mpf(float(t))) * z0
                out[k] = [float(z[i]) for i in range(n)]
    return out


def longdouble_affine_uniform(A, b, x0, times) -> np.ndarray:
    """x' = A x + b on an evenly spaced grid in extended precision (numpy longdouble, 64-bit
    mantissa on x86): the augmented matrix's exponential by scaling and squaring of a 40-term
    Taylor series, then one step per output time. A fast reference for systems too large for
    mpmath (the benchmark checks it against mpmath where both run)."""
    n = len(x0)
    ld = np.longdouble
    M = np.zeros((n + 1, n + 1), dtype=ld)
    M[:n, :n] = np.asarray(A, dtype=ld)
    M[:n, n] = np.asarray(b, dtype=ld)

    def expm_ld(X):
        norm = float(np.max(np.sum(np.abs(X), axis=0)))
        s = max(0, int(math.ceil(math.log2(norm / 0.25))) if norm > 0.25 else 0)
        Y = X / ld(2) ** s
        E = np.eye(n + 1, dtype=ld)
        term = np.eye(n + 1, dtype=ld)
        for k in range(1, 41):
            term = term @ Y / ld(k)
            E = E + term
        for _ in range(s):
            E = E @ E
        return E

    t = np.asarray(times, dtype=ld)
    h = (t[-1] - t[0]) / ld(len(t) - 1)
    z = expm_ld(M * t[0]) @ np.concatenate([np.asarray(x0, dtype=ld), [ld(1)]])
    E = expm_ld(M * h)
    out = np.empty((len(times), n), dtype=ld)
    for k in range(len(times)):
        if k:
            z = E @ z
        out[k] = z[:n]
    return out.astype(float)


def eigen_solution(A, b, x0, times) -> np.ndarray:
    """The textbook exact method: A = V diag(lam) V^-1 (A invertible). Fast, and wrong when V is
    ill-conditioned (non-normal A)."""
    lam, V = np.linalg.eig(A)
    xs = -np.linalg.solve(A, b)
    c = np.linalg.solve(V, x0 - xs)
    X = (np.exp(np.outer(times, lam)) * c) @ V.T
    return X.real + xs


def fresh_subprocess_json(code: str, args=(), env=None, timeout=600):
    """Run ``code`` in a new interpreter (nothing cached in memory) and parse the JSON it prints last."""
    import json
    import subprocess
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
