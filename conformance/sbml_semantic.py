"""Run the SBML Test Suite's semantic cases through kinetics and judge them by the suite's rule.

    python conformance/sbml_semantic.py CASES_DIR --out OUT_DIR [--cases 1-100] [--roadrunner]

CASES_DIR holds one folder per case (``NNNNN/``: ``NNNNN-sbml-l3v2.xml``, ``NNNNN-settings.txt``,
``NNNNN-results.csv``), directly or under ``cases/``; a ``CASES.txt`` beside them lists the
case ids to run. For every case the runner imports the SBML model, simulates it at
``start + i * duration / steps`` with tolerances tighter than the case's, writes
``OUT_DIR/NNNNN.csv`` in the suite's results format (header ``time,<variables>`` in the
settings' order, species as amounts or concentrations as the settings say) and judges it: every
value must satisfy ``|expected - actual| <= absolute + relative * |expected|``. A case kinetics
refuses (or fails on) gets no CSV. ``OUT_DIR/summary.json`` records each case's outcome
(``"ok"``, ``"wrong: ..."``, ``"refused: <message>"``, ``"error: ..."``), the counts and the time
from reading the SBML file to the first simulation's result (wall-clock and CPU seconds, after a
once-per-process warm-up: compiled kernels, libsbml and scipy imported).

With ``--roadrunner`` libRoadRunner (optional) runs every case too, and both pass rates are
printed side by side.

The suite itself (SBML Test Suite, semantic cases) is at https://github.com/sbmlteam/sbml-test-suite
(releases: ``semantic_tests``); the repository's tests use a copy in ``../shared/conformance``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import signal
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kinetics.errors import KineticsError  # noqa: E402
from kinetics.io.sbml import SbmlUnsupported, translate_sbml  # noqa: E402

MODEL_FILES = ("sbml-l3v2", "sbml-l3v1", "sbml-l2v5", "sbml-l2v4")
CASE_TIMEOUT = 120  # seconds; a case that runs longer is an error


class CaseTimeout(Exception):
    pass


def read_settings(path: Path) -> dict:
    """The settings file as a dict: start, duration, steps, variables, absolute, relative,
    amount, concentration."""
    raw = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            raw[key.strip().lower()] = value.strip()

    def names(key):
        return [v.strip() for v in raw.get(key, "").split(",") if v.strip()]

    return {"start": float(raw["start"]), "duration": float(raw["duration"]), "steps": int(float(raw["steps"])),
            "variables": names("variables"), "absolute": float(raw["absolute"]), "relative": float(raw["relative"]),
            "amount": names("amount"), "concentration": names("concentration")}


def case_files(cases_dir: Path, case: str):
    folder = cases_dir / case
    for suffix in MODEL_FILES:
        path = folder / f"{case}-{suffix}.xml"
        if path.exists():
            return path, folder / f"{case}-settings.txt", folder / f"{case}-results.csv"
    return None, folder / f"{case}-settings.txt", folder / f"{case}-results.csv"


def output_times(settings) -> np.ndarray:
    steps = settings["steps"]
    return settings["start"] + np.arange(steps + 1) * settings["duration"] / steps


def read_results(path: Path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header = [h.strip() for h in rows[0]]
    values = np.array([[float(v) for v in row] for row in rows[1:] if row], dtype=float)
    return header, values


def judge(header, expected, actual_header, actual, settings) -> str:
    """'ok' or 'wrong: <first failing value>' by the suite's rule."""
    absolute, relative = settings["absolute"], settings["relative"]
    if expected.shape[0] != actual.shape[0]:
        return f"wrong: {actual.shape[0]} rows, expected {expected.shape[0]}"
    for j, name in enumerate(header):
        # by position when the names agree (a variable may itself be called 'time')
        if j + 1 < len(actual_header) and actual_header[j + 1] == name:
            got = actual[:, j + 1]
        elif name in actual_header:
            got = actual[:, actual_header.index(name)]
        else:
            return f"wrong: no column '{name}'"
        want = expected[:, j]
        for i in range(len(want)):
            w, g = want[i], got[i]
            if math.isnan(w) and math.isnan(g):
                continue
            if math.isinf(w) and w == g:
                continue
            if not abs(w - g) <= absolute + relative * abs(w):
                return f"wrong: {name} at row {i}: expected {w!r}, got {g!r}"
    return "ok"


def write_csv(path: Path, header, values):
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in values:
            writer.writerow([repr(float(v)) for v in row])
    tmp.replace(path)


def _unique(base, taken):
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def run_kinetics(model_path: Path, settings: dict):
    """(header, values, (wall, CPU) seconds from reading the file to the first result)."""
    import kinetics
    from kinetics.model import Model

    started, cpu_started = time.perf_counter(), time.process_time()
    translation = translate_sbml(model_path)
    model = dict(translation.model)
    taken = set()
    for section in ("compartments", "parameters", "assignments", "reactions", "flows", "events", "observables", "rates"):
        taken |= set(model.get(section) or {})
    observables = dict(model.get("observables") or {})
    columns = []
    for variable in settings["variables"]:
        out = translation.outputs.get(variable)
        if out is None:
            raise KineticsError(f"the settings ask for '{variable}', which the model does not define")
        if variable in settings["concentration"] and "concentration" in out:
            expr = out["concentration"]
        elif variable in settings["amount"] and "amount" in out:
            expr = out["amount"]
        else:
            expr = out["value"]
        name = _unique(f"out_{len(columns)}", taken)
        observables[name] = {"expr": expr}
        columns.append(name)
    model["observables"] = observables
    built = Model.from_dict(model, source=str(model_path))
    times = output_times(settings)
    rtol = min(1e-8, settings["relative"] * 1e-3)
    atol = min(1e-10, settings["absolute"] * 1e-3)
    sim = kinetics.simulate(built, times, rtol=rtol, atol=atol)
    values = np.column_stack([sim.times] + [np.asarray(sim[c], dtype=float) for c in columns])
    elapsed = (time.perf_counter() - started, time.process_time() - cpu_started)
    return ["time"] + settings["variables"], values, elapsed


def run_roadrunner(model_path: Path, settings: dict):
    import roadrunner

    rr = roadrunner.RoadRunner(str(model_path))
    integrator = rr.getIntegrator()
    integrator.setValue("relative_tolerance", min(1e-8, settings["relative"] * 1e-3))
    integrator.setValue("absolute_tolerance", min(1e-10, settings["absolute"] * 1e-3))
    species = set(rr.model.getFloatingSpeciesIds()) | set(rr.model.getBoundarySpeciesIds())
    selections = ["time"]
    for v in settings["variables"]:
        selections.append(f"[{v}]" if v in species and v in settings["concentration"] else v)
    rr.timeCourseSelections = selections
    result = rr.simulate(settings["start"], settings["start"] + settings["duration"], settings["steps"] + 1)
    return ["time"] + settings["variables"], np.asarray(result, dtype=float)


def parse_range(text, available):
    if not text:
        return available
    wanted = set()
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            wanted |= set(range(int(lo), int(hi) + 1))
        else:
            wanted.add(int(part))
    return [c for c in available if int(c) in wanted]


def list_cases(cases_dir: Path):
    listing = cases_dir.parent / "CASES.txt" if (cases_dir.parent / "CASES.txt").exists() else cases_dir / "CASES.txt"
    if listing.exists():
        return [c.strip() for c in listing.read_text().split() if c.strip()]
    return sorted(p.name for p in cases_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d{5}", p.name))


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(cases_dir: Path, case: str, out_dir: Path):
    """(outcome, (wall, CPU) seconds to first simulation or None)."""
    model_path, settings_path, results_path = case_files(cases_dir, case)
    if model_path is None:
        return "error: no SBML model file", None
    settings = read_settings(settings_path)
    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(CASE_TIMEOUT)
    try:
        header, values, elapsed = run_kinetics(model_path, settings)
    except SbmlUnsupported as exc:
        return "refused: " + _message(exc, model_path), None
    except CaseTimeout:
        return f"error: took more than {CASE_TIMEOUT} s", None
    except KineticsError as exc:
        return "error: " + _message(exc, model_path), None
    except Exception as exc:  # noqa: BLE001 - the runner reports every failure and goes on
        return f"error: {type(exc).__name__}: {exc}", None
    finally:
        if use_alarm:
            signal.alarm(0)
    expected_header, expected = read_results(results_path)
    outcome = judge(expected_header[1:], expected[:, 1:], header, values, settings)
    write_csv(out_dir / f"{case}.csv", header, values)
    return outcome, elapsed


def _message(exc, model_path):
    text = str(exc).replace(str(model_path) + ": ", "")
    return " ".join(text.split())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", help="case numbers, e.g. 1-100,950")
    parser.add_argument("--roadrunner", action="store_true", help="also run libRoadRunner on each case")
    args = parser.parse_args(argv)
    cases_dir = args.cases_dir / "cases" if (args.cases_dir / "cases").is_dir() else args.cases_dir
    if not cases_dir.is_dir():
        parser.error(f"{args.cases_dir}: no such folder")
    cases = parse_range(args.cases, list_cases(cases_dir))
    args.out.mkdir(parents=True, exist_ok=True)

    from kinetics import warm_up
    from kinetics.errors import KineticsWarning
    warnings.simplefilter("ignore", KineticsWarning)  # unused parameters are common in the suite
    started = time.perf_counter()
    warm_up()  # compiled kernels load once per process, not per case
    import libsbml  # noqa: F401 - imported once per process too (about 0.3 s), not charged to the first case
    import scipy.integrate  # noqa: F401 - likewise (the event integrator and root finder)
    print(f"process warm-up (compiled kernels, libsbml, scipy): {time.perf_counter() - started:.2f} s", flush=True)

    outcomes, timings, cpu_timings, rr_outcomes = {}, {}, {}, {}
    for case in cases:
        outcome, elapsed = run_case(cases_dir, case, args.out)
        outcomes[case] = outcome
        if elapsed is not None:
            timings[case], cpu_timings[case] = elapsed
        if args.roadrunner:
            rr_outcomes[case] = roadrunner_outcome(cases_dir, case)
        if not outcome.startswith("ok"):
            print(f"{case}: {outcome[:200]}", flush=True)

    counts = {k: sum(1 for o in outcomes.values() if o.split(":")[0] == k) for k in ("ok", "refused", "wrong", "error")}
    summary = {"cases": outcomes, "counts": counts, "n_cases": len(cases)}
    if timings:
        values = sorted(timings.values())
        summary["seconds_to_first_simulation"] = {"median": statistics.median(values), "max": values[-1],
                                                  "max_case": max(timings, key=timings.get), "per_case": timings}
        # CPU seconds: the same span without the time other processes took from this one
        cpu = sorted(cpu_timings.values())
        summary["cpu_seconds_to_first_simulation"] = {"median": statistics.median(cpu), "max": cpu[-1],
                                                      "max_case": max(cpu_timings, key=cpu_timings.get),
                                                      "per_case": cpu_timings}
    refused = {}
    for case, outcome in outcomes.items():
        if outcome.startswith("refused"):
            # grouped by reason: the element's id taken out (<initialAssignment id="P"> -> <initialAssignment>)
            reason = re.sub(r'^<(\w+) id="[^"]*">', r"<\1>", outcome.split(": ", 1)[1])
            refused.setdefault(reason, []).append(case)
    summary["refused_by_reason"] = refused
    line = (f"kinetics: {counts['ok']}/{len(cases)} pass ({100 * counts['ok'] / max(len(cases), 1):.1f} %), "
            f"{counts['refused']} refused, {counts['wrong']} wrong, {counts['error']} error")
    if rr_outcomes:
        rr_ok = sum(1 for o in rr_outcomes.values() if o == "ok")
        summary["roadrunner"] = {"cases": rr_outcomes, "ok": rr_ok}
        line += f"\nlibRoadRunner: {rr_ok}/{len(cases)} pass ({100 * rr_ok / max(len(cases), 1):.1f} %)"
    if timings:
        t = summary["seconds_to_first_simulation"]
        c = summary["cpu_seconds_to_first_simulation"]
        line += (f"\ntime from SBML file to first simulation: median {t['median']:.3f} s, max {t['max']:.3f} s (case {t['max_case']}); "
                 f"CPU time: median {c['median']:.3f} s, max {c['max']:.3f} s (case {c['max_case']})")
    tmp = args.out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(args.out / "summary.json")
    print(line)
    return 0


def roadrunner_outcome(cases_dir: Path, case: str) -> str:
    model_path, settings_path, results_path = case_files(cases_dir, case)
    try:
        settings = read_settings(settings_path)
        header, values = run_roadrunner(model_path, settings)
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    expected_header, expected = read_results(results_path)
    return judge(expected_header[1:], expected[:, 1:], header, values, settings)


if __name__ == "__main__":
    sys.exit(main())
