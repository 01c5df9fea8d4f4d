"""Triggered-event benchmark: receptor_uptake (bimolecular binding, a desensitization event on
the bound fraction) simulated for new parameter values on every call, with and without exact
sensitivities for its 7 free parameters, through the compiled integrator watching the trigger
and, in the same run, through scipy's Radau stepped from Python (the path without numba, and
the one every event model took before the compiled one). Also an affine model with a
state-triggered event (refill below a threshold), solved exactly between events.

    .venv/bin/python bench/bench_events.py [--quick]
"""

import sys

import numpy as np

from common import QUICK, ROOT, fmt_ratio, fmt_time, interleaved, machine_summary, median, paired_ratio, perturbed, table  # noqa: E402
import kinetics  # noqa: E402
from kinetics.simulation.events import EventRunner  # noqa: E402
from kinetics.simulation.schedule import Schedule  # noqa: E402

ROUNDS, PER_ROUND = (3, 3) if QUICK else (15, 5)


def bench_receptor_uptake():
    model = kinetics.load_model(ROOT / "models" / "receptor_uptake.toml")
    c = kinetics.compile_model(model)
    schedule = Schedule(c, np.linspace(0, 48, 49))
    free = [n for n in c.parameter_names if not model.parameters[n].fixed and n not in c.computed_parameters]
    D = np.zeros((c.n_params, len(free)))
    for k, name in enumerate(free):
        D[c.parameter_names.index(name), k] = 1.0
    P = perturbed(c.default_parameters, 200)

    def radau(D):
        def run(i):
            saved = EventRunner._watch_tape
            EventRunner._watch_tape = lambda self: None
            try:
                schedule.run(P[i % len(P)], D)
            finally:
                EventRunner._watch_tape = saved
        return run

    cases = {
        "compiled, states": lambda i: schedule.run(P[i % len(P)]),
        f"compiled, states + {len(free)} sensitivities": lambda i: schedule.run(P[i % len(P)], D),
        "scipy Radau stepped from Python, states": radau(None),
        f"scipy Radau stepped from Python, states + {len(free)} sensitivities": radau(D),
    }
    timings = interleaved(cases, ROUNDS, PER_ROUND, warmup=2)
    base = "compiled, states"
    rows = [[name, fmt_time(median(t)), fmt_ratio(paired_ratio(t, timings[base]))] for name, t in timings.items()]
    print("\n### receptor_uptake: one simulation (49 output times on [0, 48] h, new parameters every call)\n")
    print(table(["path", "median", "time ÷ compiled states"], rows))
    print(f"\nSensitivities: exact, along the {len(free)} free parameters ({', '.join(free)}), carried through "
          "the event by the jump conditions; the states are run first (locating the event), then the "
          "state-and-sensitivity system from event to event.")


def bench_refill():
    model = kinetics.Model.from_dict({
        "compartments": {"A": {"initial": 10}, "B": {"initial": 0}},
        "parameters": {"k": 0.8, "kb": 0.3, "thr": 2.0},
        "flows": {"out": {"from": "A", "to": "B", "rate": "k * A"}, "b": {"from": "B", "rate": "kb * B"}},
        "events": {"refill": {"trigger": "A < thr", "assign": {"A": "A + 8"}}},
    })
    c = kinetics.compile_model(model)
    schedule = Schedule(c, np.linspace(0, 24, 49))
    P = perturbed(c.default_parameters, 200)
    D = np.eye(c.n_params)
    cases = {"exact, states": lambda i: schedule.run(P[i % len(P)]),
             "exact, states + 3 sensitivities": lambda i: schedule.run(P[i % len(P)], D),
             "compiled integrator (method='numerical'), states": lambda i: schedule.run(P[i % len(P)], method="numerical")}
    timings = interleaved(cases, ROUNDS, PER_ROUND, warmup=2)
    schedule.run(c.default_parameters)
    rows = [[name, fmt_time(median(t))] for name, t in timings.items()]
    print(f"\n### Affine model with a state-triggered event ({len(schedule.fired)} firings on [0, 24])\n")
    print(table(["path", "median"], rows))


def main():
    print("## Triggered events\n")
    print(machine_summary())
    bench_receptor_uptake()
    bench_refill()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
