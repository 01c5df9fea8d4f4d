"""The ``kinetics`` command line: thin wrappers over the library for the common jobs.

Every failure the user can cause exits non-zero with a one-paragraph message (the full
traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import KineticsError, KineticsWarning

__all__ = ["main"]


def _parse_assignments(items, what="--set"):
    out = {}
    for item in items or ():
        if "=" not in item:
            raise KineticsError(f"{what} '{item}': expected name=value, e.g. {what} k_sec=0.4")
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise KineticsError(f"{what} '{item}': '{value}' is not a number") from None
    return out


def _parse_doses(items):
    """COMPARTMENT=AMOUNT[@TIME] bolus doses."""
    doses = []
    for item in items or ():
        name, sep, rest = item.partition("=")
        amount, _, when = rest.partition("@")
        try:
            doses.append({"compartment": name.strip(), "amount": float(amount), "time": float(when) if when else 0.0})
        except ValueError:
            raise KineticsError(f"--dose '{item}': expected COMPARTMENT=AMOUNT or COMPARTMENT=AMOUNT@TIME, e.g. --dose P=1e10@0") from None
        if not sep:
            raise KineticsError(f"--dose '{item}': expected COMPARTMENT=AMOUNT[@TIME]")
    return doses


def _load(name_or_path):
    from .library import resolve_model_path
    from .model import load_model
    return load_model(resolve_model_path(name_or_path))


def cmd_models(args):
    from .library import bundled_models, models_dir
    library = bundled_models()
    if not library:
        print(f"no bundled models found in {models_dir()}")
        return 0
    width = max(len(n) for n in library)
    for name, info in library.items():
        text = info["description"].split(". ")[0].rstrip(".")
        print(f"{name:<{width}}  {text[:100] + '...' if len(text) > 100 else text}")
    print(f"\n({len(library)} models in {models_dir()}; use a name or a path with 'kinetics simulate')")
    return 0


def cmd_simulate(args):
    from .simulate import simulate
    model = _load(args.model)
    values = _parse_assignments(args.set)
    if args.points < 2:
        raise KineticsError("--points must be at least 2")
    if not args.t_end > 0:
        raise KineticsError("--t-end must be positive")
    times = np.linspace(0.0, args.t_end, args.points)
    sim = simulate(model, times, parameters=values, doses=_parse_doses(args.dose), rtol=args.rtol, atol=args.atol)
    if args.out:
        sim.to_csv(args.out)
        print(f"wrote {args.out} ({len(times)} times x {len(sim.names)} series, method: {sim.method})")
    if args.plot:
        _save_plot(lambda ax: sim.plot(ax=ax, names=sim.names if args.all else None, logy=args.logy), args.plot)
        print(f"wrote {args.plot}")
    if not args.out and not args.plot:
        import pandas as pd
        with pd.option_context("display.max_rows", 30, "display.width", 160):
            print(sim.wide.to_string(index=False, max_rows=30, float_format=lambda v: f"{v:.6g}"))
    return 0


def _save_plot(draw, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    draw(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def cmd_fit(args):
    from .fit import fit
    from .problem import load_fit_spec
    folder = Path(args.case)
    problem = load_fit_spec(folder)
    out = Path(args.out) if args.out else (folder if folder.is_dir() else folder.parent) / "results"
    print(f"fitting {problem.model.name} to {problem.data.n_points} points "
          f"({', '.join(problem.condition_names)}; noise {problem.noise}; free: {', '.join(problem.free)})")
    result = fit(problem, multistart=args.multistart, seed=args.seed, method=args.method,
                 executor=None if args.serial else "auto", progress=not args.no_progress,
                 profiles=not args.no_profiles, mcmc={"steps": args.mcmc} if args.mcmc else None,
                 engine=args.engine)
    print(result.fit_report())
    written = result.save(out)
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_compare(args):
    from .compare import compare
    nested = {}
    for item in args.nested or ():
        small, sep, big = item.partition("<")
        if not sep:
            raise KineticsError(f"--nested '{item}': expected SMALL<LARGE (folder names)")
        nested[small.strip()] = big.strip()
    labels = [Path(d).resolve().name if Path(d).is_dir() else Path(d).resolve().parent.name for d in args.dirs]
    if len(set(labels)) != len(labels):
        labels = [str(Path(d)) for d in args.dirs]
    comparison = compare(args.dirs, labels=labels, nested=nested)
    if args.json:
        import json
        print(json.dumps(comparison.to_dict(), indent=2, default=float))
    else:
        print(comparison.report())
    if args.plot:
        from .fileio import atomic_path
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        base = Path(args.plot)
        for suffix, fig in (("", comparison.plot_fits()), ("_weights", comparison.plot_weights())):
            if fig is None:
                continue
            target = base.with_name(base.stem + suffix + (base.suffix or ".png"))
            with atomic_path(target) as tmp:
                fig.savefig(tmp, dpi=110, format="png")
            plt.close(fig)
            print(f"wrote {target}")
    return 0


def cmd_steady(args):
    import json

    import pandas as pd

    from .steady import compare_scenarios, steady_state
    model = _load(args.model)
    values = _fit_values(args.fit, model) if args.fit else {}
    values.update(_parse_assignments(args.set))
    scale = _parse_assignments(args.scale, "--scale")
    baseline = steady_state(model, values or None)
    out = baseline.to_dict()
    table = uncertainty = None
    if scale:
        table = compare_scenarios(model, values or None, {"scenario": {"scale": scale}})
        out["scenario"] = steady_state(model, values or None, scale=scale).to_dict()
    if args.fit:
        from .uncertainty import steady_state_uncertainty
        uncertainty = steady_state_uncertainty(model, args.fit, n_samples=args.samples)
        out["uncertainty"] = uncertainty.to_dict(orient="records")
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(baseline.report())
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        if table is not None:
            print("\n[[What-if: " + ", ".join(f"{k} x {v:g}" for k, v in scale.items()) + "]]")
            print(table.to_string(float_format=lambda v: f"{v:.5g}"))
        if uncertainty is not None:
            print(f"\n[[95 % intervals from the fit in {args.fit}]] (delta method on the log scale; sampling: "
                  f"{args.samples} parameter draws)")
            print(uncertainty.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    return 0


def cmd_pk(args):
    import json

    import pandas as pd

    from .pk import pk_summary
    model = _load(args.model)
    doses = _parse_doses([args.dose])
    dose = {"compartment": doses[0]["compartment"], "amount": doses[0]["amount"]}
    values = _fit_values(args.fit, model) if args.fit else {}
    values.update(_parse_assignments(args.set))
    summary = pk_summary(model, dose, args.observable, values or None, t_last=args.t_last)
    out = summary.to_dict()
    uncertainty = None
    if args.fit:
        from .uncertainty import pk_uncertainty
        uncertainty = pk_uncertainty(model, args.fit, dose, args.observable, n_samples=args.samples, t_last=args.t_last)
        out["uncertainty"] = uncertainty.to_dict(orient="records")
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(summary.report())
    if uncertainty is not None:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(f"\n[[95 % intervals from the fit in {args.fit}]]")
            print(uncertainty.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    return 0


def _fit_values(folder, model):
    """Best-fit values of a saved fit (result.json) for the model's parameters."""
    from .report import read_result
    path, data = read_result(folder)
    if data["model"].get("name") != model.name:
        raise KineticsError(f"{path}: this fit is of model '{data['model'].get('name')}', not '{model.name}'")
    return {name: entry["value"] for name, entry in data["parameters"].items() if name in model.parameters}


def cmd_export(args):
    from .io.sbml import write_sbml
    source = Path(args.model)
    if source.is_dir() and (source / "fit.toml").exists():  # a fit case: its model
        from .problem import load_fit_spec
        model = load_fit_spec(source / "fit.toml").model
    else:
        model = _load(args.model)
    write_sbml(model, args.out)
    print(f"wrote {args.out} (SBML Level 3 version 2, model '{model.name}')")
    return 0


def cmd_demo(args):
    from . import demo
    return demo.run(Path(args.out))


def _add_prediction_options(p):
    """Options shared by the commands that predict from a model (steady, pk)."""
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="set a parameter (repeatable)")
    p.add_argument("--fit", metavar="DIR", help="use the best-fit values of a saved fit, with 95 %% intervals")
    p.add_argument("--samples", type=int, default=300, help="parameter draws for the sampled intervals (default 300)")
    p.add_argument("--json", action="store_true", help="print JSON")


def build_parser():
    parser = argparse.ArgumentParser(prog="kinetics", description="Compartment kinetics of exosome production and clearance.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list bundled models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("simulate", help="simulate a model file or bundled model")
    p.add_argument("model", help="model file (.toml, or SBML .xml) or bundled model name")
    p.add_argument("--t-end", type=float, default=48.0, help="end time, in the model's time unit (default 48)")
    p.add_argument("--points", type=int, default=101, help="number of output times (default 101)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a parameter value (repeatable)")
    p.add_argument("--dose", action="append", metavar="COMP=AMOUNT[@TIME]", help="bolus dose (repeatable)")
    p.add_argument("--out", help="write the wide table (time, compartments, observables) to this CSV")
    p.add_argument("--plot", help="write a plot to this image file")
    p.add_argument("--all", action="store_true", help="plot compartments as well as observables")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance, numerical path (default 1e-8)")
    p.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance, numerical path (default 1e-10)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("fit", help="fit a worked case folder (fit.toml + data) and write result.json, report.txt, plots")
    p.add_argument("case", help="a folder holding fit.toml, or the fit.toml itself")
    p.add_argument("--out", help="output folder (default: CASE/results)")
    p.add_argument("--multistart", type=int, help="number of starts (default: the spec's)")
    p.add_argument("--seed", type=int, help="seed of the multi-start design (default: the spec's)")
    p.add_argument("--method", help="least_squares (default), leastsq, differential_evolution, basinhopping, ...")
    p.add_argument("--engine", choices=["auto", "lmfit"],
                   help="where local fits run: auto (default; compiled trust-region steps, lmfit finishes) or lmfit (every step)")
    p.add_argument("--no-profiles", action="store_true", help="skip profile-likelihood intervals")
    p.add_argument("--mcmc", type=int, metavar="STEPS", help="also sample the posterior with emcee (needs the mcmc extra)")
    p.add_argument("--serial", action="store_true", help="never use a process pool for the starts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("compare", help="compare fits of model variants to the same data (AIC, AICc, BIC, weights, LRT)")
    p.add_argument("dirs", nargs="+", help="fit output folders (each with result.json)")
    p.add_argument("--nested", action="append", metavar="SMALL<LARGE", help="declare a nested pair by folder name")
    p.add_argument("--plot", help="write the curves of all variants (and NAME_weights.png) to this image file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("steady", help="steady state, stability, fluxes and sensitivities of a model")
    p.add_argument("model", help="model file (.toml, or SBML .xml) or bundled model name")
    p.add_argument("--scale", action="append", metavar="NAME=FACTOR", help="what-if: scale a parameter, shown beside the baseline")
    _add_prediction_options(p)
    p.set_defaults(func=cmd_steady)

    p = sub.add_parser("pk", help="pharmacokinetic summary of a bolus dose (AUC, CL, Vss, MRT, half-lives)")
    p.add_argument("model", help="model file (.toml, or SBML .xml) or bundled model name")
    p.add_argument("--dose", required=True, metavar="COMP=AMOUNT", help="bolus at t = 0, e.g. plasma=1e10")
    p.add_argument("--observable", required=True, help="measured compartment or observable (e.g. a concentration)")
    p.add_argument("--t-last", type=float, help="last sampling time, for AUC(0-tlast)")
    _add_prediction_options(p)
    p.set_defaults(func=cmd_pk)

    p = sub.add_parser("export", help="write a model in another format (sbml: SBML Level 3 version 2)")
    p.add_argument("format", choices=["sbml"], help="the format to write")
    p.add_argument("model", help="model file (.toml or .xml), bundled model name, or fit case folder")
    p.add_argument("--out", required=True, help="the file to write (e.g. model.xml)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="run the worked example end to end")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", KineticsWarning)
            original = warnings.formatwarning
            warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
            try:
                return args.func(args) or 0
            finally:
                warnings.formatwarning = original
    except (KineticsError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        if not isinstance(exc, KineticsError):
            pass
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head and the like
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
