"""First run (issue 12): kernels compile when first used, with one line on stderr saying so, and
an affine model with a real spectrum compiles only the real kernel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kinetics
from kinetics.cli import main
from kinetics.numerics import compile_notice
from kinetics.numerics.linear import affine_rows, solve_affine

from conftest import REPO


def test_notice_is_printed_once_for_a_kernel_that_numba_has_not_cached(tmp_path, monkeypatch, capsys):
    pytest.importorskip("numba")
    import importlib.util
    monkeypatch.setattr(compile_notice, "_checked", set())
    monkeypatch.setattr(compile_notice, "_printed", set())
    # a kernel in a new file: numba caches beside it, in a folder no earlier run has filled
    source = tmp_path / "fresh_kernel.py"
    source.write_text("from numba import njit\n\n\n@njit(cache=True)\ndef double(x):\n    return 2.0 * x\n")
    spec = importlib.util.spec_from_file_location("fresh_kernel", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    double = module.double

    assert compile_notice.announce_compilation(double, "the test", 3)
    assert capsys.readouterr().err == "kinetics: compiling the test kernels, once (about 3 s; cached for later runs)...\n"
    assert not compile_notice.announce_compilation(double, "the test", 3)      # once per kernel and group
    assert double(2.0) == 4.0                                                    # compiled (and cached) now
    compile_notice._checked.clear()
    assert not compile_notice.needs_compilation(double)
    assert not compile_notice.announce_compilation(double, "the test again", 3)  # compiled: no notice
    assert capsys.readouterr().err == ""


@pytest.fixture
def nothing_cached(monkeypatch):
    """Every kernel group reported as missing from numba's cache, no group announced yet."""
    pytest.importorskip("numba")
    monkeypatch.setattr(compile_notice, "_checked", set())
    monkeypatch.setattr(compile_notice, "_printed", set())
    monkeypatch.setattr(compile_notice, "needs_compilation", lambda dispatcher: True)


def compile_lines(err):
    return [line for line in err.splitlines() if "compil" in line.lower()]


@pytest.mark.parametrize("model, group", [("exo_sat", "the stiff-integrator"), ("exo_linear", "the exact-solution")])
def test_the_command_line_prints_only_the_kernel_groups_notice(nothing_cached, capsys, model, group):
    """One mechanism: the command line adds no compile note of its own; the group that
    compiles says so, once."""
    assert main(["simulate", model, "--points", "5", "--json"]) == 0
    err = capsys.readouterr().err
    assert compile_lines(err) == [f"kinetics: compiling {group} kernels, once "
                                  f"(about {compile_notice.NOTICE_SECONDS[group]} s; cached for later runs)..."]
    assert main(["simulate", model, "--points", "5", "--json"]) == 0      # once per process
    assert compile_lines(capsys.readouterr().err) == []


def test_no_notice_when_the_kernels_are_cached(monkeypatch, capsys):
    pytest.importorskip("numba")
    for model in ("exo_sat", "exo_linear"):      # compiled (and cached) by now
        assert main(["simulate", model, "--points", "5", "--json"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(compile_notice, "_checked", set())
    monkeypatch.setattr(compile_notice, "_printed", set())
    assert main(["simulate", "exo_sat", "--points", "5", "--json"]) == 0
    assert main(["simulate", "exo_linear", "--points", "5", "--json"]) == 0
    assert compile_lines(capsys.readouterr().err) == []


def test_ensembles_announce_their_own_kernels(nothing_cached, recwarn):
    """simulate_many runs kernels of its own (batched, parallel): they announce themselves too."""
    import io
    import contextlib
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        kinetics.simulate_many(REPO / "models" / "exo_linear.toml", [1.0, 2.0], {"k_mat": [0.4, 0.5]})
        kinetics.simulate_many(REPO / "models" / "exo_sat.toml", [1.0, 2.0], {"k_mat": [0.4, 0.5]})
    lines = compile_lines(buffer.getvalue())
    assert any("the ensemble exact-solution" in line for line in lines), lines
    assert any("the ensemble stiff-integrator" in line for line in lines), lines
    assert all(line.startswith("kinetics: compiling ") for line in lines), lines


def test_an_affine_fit_with_a_real_spectrum_compiles_only_the_real_kernel():
    """The row kernel held the real and the complex eigen paths, so numba compiled both
    specializations of the eigen core on every first run (half of its compile time)."""
    pytest.importorskip("numba")
    code = textwrap.dedent("""
        import numpy as np
        from kinetics.numerics import linear, linear_kernel
        A = np.array([[-1.0, 0.0], [1.0, -2.0]])
        series = (np.eye(2), np.zeros(2), np.zeros((0, 2, 2)), np.zeros((0, 2)), np.array([0, 1], dtype=np.intp))
        out = linear.affine_rows(A, np.ones(2), np.zeros(2), np.array([0.0, 1.0]), np.ones((1, 2, 2)), np.ones((1, 2)),
                                 np.ones((1, 1)), np.zeros((2, 1)), series, np.array([0, 1], dtype=np.intp))
        assert out is not None
        print(len(linear_kernel.affine_rows_complex.signatures), len(linear_kernel.affine_rows_real.signatures))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "1"]


@pytest.mark.parametrize("A", [np.array([[-1.0, 0.0, 0.0], [1.0, -2.0, 0.0], [0.0, 0.5, -0.3]]),
                               np.array([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.0], [0.3, 0.0, -0.5]])],
                         ids=["real", "complex"])
def test_affine_rows_equal_the_matrix_exponential(A):
    """Both row kernels against scipy's expm path (an independent method)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    n, P = 3, 2
    b, x0 = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    taus = np.array([0.0, 0.5, 1.0, 3.0])
    dA_full, db_full = rng.normal(size=(P, n, n)), rng.normal(size=(P, n))
    D, s0 = np.eye(P), np.zeros((n, P))
    C, e = rng.normal(size=(2, n)), np.array([0.1, -0.2])
    series = (C, e, np.zeros((0, 2, n)), np.zeros((0, 2)), np.array([0, 1, 1, 0, 1], dtype=np.intp))
    t_index = np.array([0, 1, 2, 3, 3], dtype=np.intp)
    f, J = affine_rows(A, b, x0, taus, dA_full, db_full, D, s0, series, t_index)
    X, S, used = solve_affine(A, b, x0, taus, dA_full, db_full, s0, method="expm")
    assert used == "expm"
    index = series[4]
    np.testing.assert_allclose(f, np.einsum("ra,ra->r", C[index], X[t_index]) + e[index], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(J, np.einsum("ra,rak->rk", C[index], S[t_index]), rtol=1e-8, atol=1e-10)


def test_every_kernel_group_is_loaded_from_numba_s_disk_cache_in_a_new_process():
    """Compiled once, loaded afterwards: a kernel whose cache key changes from process to process
    (e.g. a closure over other kernels) would compile again in every process (the lock-step
    integrator once did: 12 s per process). Two fresh interpreters run every group's entry; the
    second must find every kinetics kernel it runs in the cache."""
    pytest.importorskip("numba")
    code = textwrap.dedent("""
        import json, numpy as np, sympy as sp
        from kinetics.numerics import linear, linear_kernel, linear_batch, rosenbrock, rosenbrock_lanes, trust_region
        from kinetics.codegen.tape import build_tapes
        A = np.array([[-1.0, 0.0], [1.0, -2.0]])
        series = (np.eye(2), np.zeros(2), np.zeros((0, 2, 2)), np.zeros((0, 2)), np.array([0, 1], dtype=np.intp))
        B, b = np.array([[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]]), np.array([1.0, 2.0, 3.0])
        t, x, k = sp.symbols("t x k")
        rhs, jac, _ = build_tapes([-k * x], t, [x], [k])
        linear.affine_rows(A, np.ones(2), np.zeros(2), np.array([0.0, 1.0]), np.ones((1, 2, 2)), np.ones((1, 2)),
                           np.ones((1, 1)), np.zeros((2, 1)), series, np.array([0, 1], dtype=np.intp))
        linear.solve_affine(A, np.ones(2), np.zeros(2), np.array([0.0, 1.0]))
        trust_region.least_squares_trf(lambda z: (B @ z - b, B), np.zeros(2), -np.inf, np.inf)
        rosenbrock.integrate(rhs, jac, np.ones(1), np.ones(1), 0.0, np.array([0.0, 1.0]), 1e-6, 1e-9)
        linear_batch.solve_sets(np.repeat(A[None], 3, 0), np.ones((3, 2)), np.zeros((3, 2)), np.array([0.5, 1.0]), 1e5,
                                np.empty((3, 2, 2)), np.zeros(3, dtype=bool))
        linear_batch.solve_sets_expm(np.repeat(A[None], 3, 0), np.ones((3, 2)), np.zeros((3, 2)), np.array([0.5, 1.0]),
                                     np.empty((3, 2, 2)))
        rosenbrock_lanes.integrate_many(rhs, jac, np.ones((3, 1)), np.ones((3, 1)), 0.0, np.array([0.5, 1.0]), 1e-6, 1e-9)
        misses = {}
        for module in (linear_kernel, linear_batch, rosenbrock, rosenbrock_lanes, trust_region):
            for name in dir(module):
                kernel = getattr(module, name)
                if hasattr(kernel, "stats") and getattr(kernel, "signatures", None):
                    misses[module.__name__ + "." + name] = sum(kernel.stats.cache_misses.values())
        print(json.dumps(misses))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for attempt in ("compile or load", "load"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr
    import json
    misses = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "kinetics.numerics.rosenbrock_lanes._lanes_solve" in misses and "kinetics.numerics.trust_region._step" in misses
    assert {name: count for name, count in misses.items() if count} == {}
