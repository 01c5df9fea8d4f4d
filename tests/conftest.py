"""Shared fixtures and helpers for the kinetics test suite.

``MODEL_TEXT`` is a small valid model (3 compartments, 5 parameters, 4 flows, 1 observable,
all with units). Tests of bad input derive variants from it with :func:`variant`, which
insists that the text being replaced occurs exactly once, so a variant can never silently
equal the valid model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# every kernel group compiles in the test process itself: a fit's engine must not depend on
# whether a background compilation has finished (tests/test_precompile.py tests that mode)
os.environ.setdefault("KINETICS_COMPILE", "foreground")

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
#: the reference fit task (exo_linear, 40 points, proportional noise), vendored from the shared reference
FIT_TASK_DIR = Path(__file__).resolve().parent / "data" / "fit_task"

MODEL_TEXT = """\
name = "mini"
description = "A small test model: endosome to MVB to plasma"
time_unit = "h"

[compartments]
EE  = { initial = 100, unit = "particles", description = "early endosomes" }
MVB = { initial = 0, unit = "particles" }
P   = { initial = 0, unit = "particles", description = "exosomes in plasma" }

[parameters]
s_endo = { value = 10, unit = "particles/h", min = 0, max = 1e6 }
k_mat  = { value = 0.5, unit = "1/h", min = 1e-3, max = 100 }
k_sec  = { value = 0.2, unit = "1/h", min = 1e-3, max = 100 }
k_cl   = { value = 1.0, unit = "1/h", min = 1e-3, max = 100, fixed = true }
V      = { value = 2.0, unit = "mL", fixed = true }

[flows]
endocytosis = { to = "EE", rate = "s_endo" }
maturation  = { from = "EE", to = "MVB", rate = "k_mat * EE" }
secretion   = { from = "MVB", to = "P", rate = "k_sec * MVB" }
clearance   = { from = "P", rate = "k_cl * P" }

[observables]
plasma_conc = { expr = "P / V", unit = "particles/mL" }
"""

#: A -> B at rate k * A (A(0) = 100): the closed form 100 exp(-k t) checks likelihoods by hand.
DECAY_MODEL = """\
name = "decay"
time_unit = "h"

[compartments]
A = { initial = 100 }
B = { initial = 0 }

[parameters]
k = { value = 0.5, min = 1e-3, max = 10 }

[flows]
conversion = { from = "A", to = "B", rate = "k * A" }
"""

COMPARTMENTS = ["EE", "MVB", "P"]
PARAMETERS = ["s_endo", "k_mat", "k_sec", "k_cl", "V"]
OBSERVABLES = ["plasma_conc"]


def write_model(tmp_path, text: str, name: str = "model.toml") -> Path:
    """Write ``text`` as a model file in ``tmp_path`` and return its path."""
    path = Path(tmp_path) / name
    path.write_text(text, encoding="utf-8")
    return path


def variant(old: str, new: str, text: str = MODEL_TEXT) -> str:
    """``text`` with the single occurrence of ``old`` replaced by ``new``."""
    count = text.count(old)
    assert count == 1, f"test bug: {old!r} occurs {count} times in the model text"
    return text.replace(old, new)


def model_error(path) -> str:
    """Load ``path``, expect a ModelError, and return its message."""
    from kinetics import ModelError, load_model

    with pytest.raises(ModelError) as info:
        load_model(path)
    return str(info.value)


@pytest.fixture
def model_text() -> str:
    return MODEL_TEXT


@pytest.fixture
def model_file(tmp_path) -> Path:
    """The small valid model written to ``tmp_path/model.toml``."""
    return write_model(tmp_path, MODEL_TEXT)


# ------------------------------------------------------------------ a small fit case
ONE_COMPARTMENT_TEXT = """\
name = "one_compartment"
time_unit = "h"

[compartments]
plasma = { initial = 0 }

[parameters]
k_el = { value = 1.0, min = 1e-3, max = 100 }
V    = { value = 2.0, min = 0.1, max = 10 }

[flows]
elimination = { from = "plasma", rate = "k_el * plasma" }

[observables]
conc = { expr = "plasma / V" }
"""

FIT_CASE_TIMES = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def write_fit_case(folder, condition="iv", k_el=0.8, volume=2.5, noise_seed=0) -> Path:
    """A fit case folder (model.toml, data.csv without a condition column, fit.toml with one
    named condition, k_el and V free): a bolus of 100 into plasma, cleared at ``k_el``,
    measured as conc = plasma / V with 5 % noise."""
    import numpy as np
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.toml").write_text(ONE_COMPARTMENT_TEXT, encoding="utf-8")
    times = np.array(FIT_CASE_TIMES)
    rng = np.random.default_rng(noise_seed)
    values = 100 / volume * np.exp(-k_el * times) * (1 + 0.05 * rng.standard_normal(len(times)))
    lines = ["time,observable,value"] + [f"{t:g},conc,{v:.8g}" for t, v in zip(times, values)]
    (folder / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "fit.toml").write_text(f"""\
model = "model.toml"
data = "data.csv"

[fit]
free = ["k_el", "V"]
noise = "proportional"
multistart = 2
seed = 0

[conditions.{condition}]
doses = [ {{ compartment = "plasma", amount = 100, time = 0 }} ]
""", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def dask_cluster():
    """One real dask.distributed LocalCluster for the whole session (2 worker processes, 1 thread
    each; starting it costs seconds): yields (client, scheduler address)."""
    distributed = pytest.importorskip("distributed", reason="the dask extra (dask[distributed]) is not installed")
    import logging
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    try:
        yield client, cluster.scheduler_address
    finally:
        client.close()
        cluster.close()


def radau(rhs, y0, times, events=(), breaks=(), t0=0.0):
    """Reference solution at ``times``: Radau at rtol 1e-12. ``events``: (g, action) pairs, an
    event firing where g(t, y) crosses zero upwards (located by solve_ivp), ``action(t, y)``
    returning the new y. ``breaks``: (time, action) applied exactly at fixed times. Output at an
    event or break time shows the values after it."""
    import numpy as np
    from scipy.integrate import solve_ivp
    times = np.asarray(times, dtype=float)
    out = np.empty((len(times), len(y0)))
    t, y, k = t0, np.array(y0, dtype=float), 0
    breaks = sorted(breaks, key=lambda b: b[0])
    # an event fires on a false -> true turn only: after firing (or when true at the start) it
    # is re-armed by its trigger turning false again (a downward crossing)
    armed = [g(t, y) < -1e-10 for g, _ in events]
    while True:
        while k < len(times) and times[k] <= t:
            out[k] = y
            k += 1
        if k == len(times):
            return out
        pending = [b for b in breaks if b[0] > t]
        t_stop = min(pending[0][0], times[-1]) if pending else times[-1]
        fns = []
        for g, _ in events:
            def fn(tt, yy, g=g):
                return g(tt, yy)
            fn.terminal, fn.direction = True, (1 if armed[len(fns)] else -1)
            fns.append(fn)
        sol = solve_ivp(rhs, (t, t_stop), y, method="Radau", rtol=1e-12, atol=1e-12, dense_output=True,
                        events=fns or None)
        assert sol.success, sol.message
        t_end = sol.t[-1]
        while k < len(times) and (times[k] < t_end or (sol.status == 0 and times[k] <= t_end and not
                                                         (pending and times[k] == pending[0][0]))):
            out[k] = sol.sol(times[k])
            k += 1
        y, t = sol.y[:, -1].copy(), t_end
        if sol.status == 1:
            for i, te in enumerate(sol.t_events):
                if len(te) and armed[i]:
                    y = np.array(events[i][1](t, y), dtype=float)
                    armed[i] = events[i][0](t, y) < -1e-10
                elif len(te):
                    armed[i] = True
        elif pending and t == pending[0][0]:
            y = np.array(pending[0][1](t, y), dtype=float)
