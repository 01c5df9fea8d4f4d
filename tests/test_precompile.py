"""Background compilation (issue 12, first run): a fit whose trust-region kernels numba has not
cached runs scipy's least_squares (the same algorithm) while one low-priority process compiles
them into the cache; later fits load them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from scipy.optimize import least_squares

from kinetics.numerics import compile_notice, precompile, trust_region

from conftest import REPO

T = np.linspace(0.0, 3.0, 8)
Y = 2.0 * np.exp(-0.7 * T)


def decay_residuals(x):
    e = np.exp(-x[1] * T)
    return x[0] * e - Y, np.column_stack([e, -x[0] * T * e])


@pytest.fixture
def uncached(monkeypatch, tmp_path):
    """The trust region reported as missing from numba's cache, locks in a private folder, and
    process starts recorded instead of run."""
    pytest.importorskip("numba")
    monkeypatch.setattr(compile_notice, "_checked", set())
    monkeypatch.setattr(compile_notice, "_printed", set())
    monkeypatch.setattr(compile_notice, "_launched", set())
    monkeypatch.setattr(compile_notice, "needs_compilation", lambda dispatcher: True)
    monkeypatch.setattr(compile_notice.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("KINETICS_COMPILE", "background")
    started = []

    class Recorder:
        def __init__(self, args, **kwargs):
            started.append((args, kwargs))

    monkeypatch.setattr(compile_notice.subprocess, "Popen", Recorder)
    return started


def test_an_uncached_trust_region_fits_with_scipy_and_compiles_in_the_background(uncached, capsys):
    res = trust_region.least_squares_trf(decay_residuals, np.array([1.0, 2.0]), np.zeros(2), np.full(2, 10.0))
    ref = least_squares(lambda x: decay_residuals(x)[0], [1.0, 2.0], jac=lambda x: decay_residuals(x)[1],
                        bounds=(np.zeros(2), np.full(2, 10.0)), method="trf", x_scale="jac",
                        ftol=1e-8, xtol=1e-8, gtol=1e-8)
    np.testing.assert_array_equal(res.x, ref.x)     # scipy's own iterates
    np.testing.assert_allclose(res.x, [2.0, 0.7], rtol=1e-7)
    assert len(uncached) == 1
    args, kwargs = uncached[0]
    assert args[:4] == [sys.executable, "-m", "kinetics.numerics.precompile", "the trust-region"]
    lock = args[4]
    assert os.path.exists(lock) and kwargs["env"]["KINETICS_COMPILE"] == "foreground"
    err = capsys.readouterr().err
    assert err.count("kinetics: compiling the trust-region kernels in the background") == 1
    assert "scipy's least_squares" in err
    # the next fits in this process: still scipy, no second process, no second line
    trust_region.least_squares_trf(decay_residuals, np.array([1.5, 1.0]), np.zeros(2), np.full(2, 10.0))
    assert len(uncached) == 1 and capsys.readouterr().err == ""
    # another process (nothing launched there yet) finds the fresh lock and starts nothing
    compile_notice._launched.clear()
    trust_region.least_squares_trf(decay_residuals, np.array([1.5, 1.0]), np.zeros(2), np.full(2, 10.0))
    assert len(uncached) == 1
    # a lock left by a compilation that died is replaced
    compile_notice._launched.clear()
    old = time.time() - compile_notice.STALE_LOCK_SECONDS - 10
    os.utime(lock, (old, old))
    trust_region.least_squares_trf(decay_residuals, np.array([1.5, 1.0]), np.zeros(2), np.full(2, 10.0))
    assert len(uncached) == 2


def test_foreground_mode_compiles_in_the_process(uncached, monkeypatch, capsys):
    monkeypatch.setenv("KINETICS_COMPILE", "foreground")
    assert compile_notice.use_compiled(trust_region.compile_kernels, "the trust-region")
    assert uncached == []
    assert "compiling the trust-region kernels, once" in capsys.readouterr().err
    monkeypatch.setenv("KINETICS_COMPILE", "background")
    with compile_notice.compiling_in_foreground():
        assert compile_notice.compile_mode() == "foreground"
    assert compile_notice.compile_mode() == "background"


def test_groups_without_a_scipy_path_never_go_to_the_background(uncached):
    assert compile_notice.use_compiled(trust_region.compile_kernels, "the stiff-integrator")
    assert uncached == []


def test_an_unknown_mode_is_refused_with_what_to_use(monkeypatch):
    monkeypatch.setenv("KINETICS_COMPILE", "later")
    with pytest.raises(ValueError, match="KINETICS_COMPILE='later'.*'background'.*'foreground'"):
        compile_notice.compile_mode()


def test_the_background_program_refuses_an_unknown_group(capsys):
    assert precompile.main(["the flux capacitor"]) == 2
    assert "GROUP one of ['the trust-region']" in capsys.readouterr().err


def test_a_background_compilation_fills_the_cache_for_the_next_process(tmp_path):
    """End to end with an empty numba cache: the first process fits on scipy and starts the
    compilation, which removes its lock when done; the next process runs the compiled kernels
    from the cache without compiling."""
    pytest.importorskip("numba")
    code = textwrap.dedent("""
        import json, sys, numpy as np
        from kinetics.numerics import compile_notice, trust_region
        t = np.linspace(0.0, 3.0, 8)
        y = 2.0 * np.exp(-0.7 * t)
        def fun_and_jac(x):
            e = np.exp(-x[1] * t)
            return x[0] * e - y, np.column_stack([e, -x[0] * t * e])
        res = trust_region.least_squares_trf(fun_and_jac, np.array([1.0, 2.0]), np.zeros(2), np.full(2, 10.0))
        print(json.dumps({"x": res.x.tolist(), "compiled": bool(trust_region._step.signatures),
                          "misses": sum(trust_region._step.stats.cache_misses.values()),
                          "lock": compile_notice.lock_path(trust_region._step, "the trust-region")}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "TMPDIR": str(tmp_path), "KINETICS_COMPILE": "background"}
    import json

    def run():
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr

    first, err = run()
    assert not first["compiled"] and "in the background" in err
    deadline = time.time() + 600
    while os.path.exists(first["lock"]) and time.time() < deadline:
        time.sleep(1.0)
    assert not os.path.exists(first["lock"]), "the background compilation did not finish in 10 minutes"
    second, err = run()
    assert second["compiled"] and second["misses"] == 0 and "compiling" not in err
    np.testing.assert_allclose(second["x"], first["x"], rtol=1e-9)
