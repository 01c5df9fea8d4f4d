"""PEtab v1 in and out.

Import (:func:`read_petab`) reads a PEtab v1 problem (YAML and its tables, with the ``petab``
library, the optional extra ``kinetics[petab]``) and translates it into the ingredients of a
kinetics fit problem; :func:`kinetics.fitting.problem.load_petab` builds the FitProblem.

How PEtab maps onto a kinetics fit problem:

- The SBML model goes through kinetics' own SBML importer. Parameters of the parameter table
  that the model lacks (observable, noise and condition-specific parameters) become model
  parameters that no rate uses.
- Parameter table: ``parameterScale`` lin / log / log10 is the parameter's scale (log and log10
  are both optimized as log10, the same parameterization), bounds, ``nominalValue`` (the start,
  or the value of a parameter not estimated), ``estimate``, and the objective priors.
- Condition table: a parameter or compartment column overrides the model parameter in that
  condition (a number or a parameter id); a species column sets its initial value (a
  concentration for species in concentration units: amount = value x compartment size); NaN
  or empty keeps the model's value (after pre-equilibration: the pre-equilibrated state).
- A ``preequilibrationConditionId`` simulates that condition to steady state first.
- Each observable, with its placeholders replaced by a measurement's ``observableParameters``
  and ``noiseParameters`` (numbers or parameter ids), becomes a model observable of its own
  with its noise formula as sigma, its transformation and its noise distribution.

Anything else is refused naming the table, row and column: steady-state measurements
(time ``inf``), noise formulas that read model states, several models, unknown condition columns.

Export (:func:`write_petab`) writes a kinetics fit problem as a PEtab v1 problem.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

__all__ = ["PetabTranslation", "read_petab", "write_petab", "evaluate", "is_petab_problem", "PetabUnsupported",
           "profiled_noise_scale", "NOISE_SCALE_FLOOR", "NOISE_SCALE_MARGIN"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"^(observable|noise)Parameter(\d+)_(.+)$")
#: functions PEtab formulas may call that kinetics' expression language also knows
_FUNCTIONS = {"exp", "log", "log10", "log2", "sqrt", "sin", "cos", "tan", "abs", "min", "max", "pow", "ln"}


class PetabUnsupported(DataError):
    """A PEtab construct kinetics cannot represent faithfully (refused, never approximated)."""


def _petab():
    try:
        import petab.v1 as petab
    except ImportError:
        raise DataError("reading PEtab problems needs the petab library: pip install 'kinetics[petab]'") from None
    return petab


def is_petab_problem(path) -> bool:
    """Whether ``path`` names a PEtab problem (a .yaml / .yml file)."""
    return Path(path).suffix.lower() in (".yaml", ".yml") and Path(path).is_file()


@dataclass
class PetabTranslation:
    """A PEtab problem as kinetics fit-problem ingredients (see the module docstring)."""
    model: object                      # kinetics.Model
    data: object                       # DataFrame: condition, time, observable, value (measurement order)
    free: list
    parameters: dict                   # fit spec [parameters]: name -> {value, min, max, scale, prior}
    conditions: list                   # dicts: name, overrides, initial, preequilibration (a dict or None)
    observables: dict                  # fit spec [observables]: instance -> {sigma, transformation, distribution}
    names: dict = field(default_factory=dict)   # PEtab id -> kinetics name where they differ
    measurement_keys: list = field(default_factory=list)   # per measurement row: (observableId, condition ids)
    origin: str = ""
    tables: dict = field(default_factory=dict)


def _split(value) -> list:
    """The ';'-separated entries of an observableParameters / noiseParameters cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, (int, float)):
        return [repr(float(value))]
    text = str(value).strip()
    return [] if not text or text.lower() == "nan" else [v.strip() for v in text.split(";")]


def _is_nan(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in ("", "nan")


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _substitute(formula: str, mapping: dict, unknown) -> str:
    """Replace every identifier of a PEtab formula by its kinetics text (in parentheses);
    ``unknown(name)`` is called for identifiers neither mapped nor a known function."""
    formula = str(formula).replace("^", "**")

    def replace(match):
        name = match.group(0)
        if name in mapping:
            return f"({mapping[name]})"
        if name in _FUNCTIONS:
            return "log" if name == "ln" else name
        unknown(name)
        return name
    # identifiers only outside numbers (1e-3 must stay a number)
    out, pos = [], 0
    for match in re.finditer(r"(?<![\w.])(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_]\w*)", formula):
        out.append(formula[pos:match.start()])
        out.append(match.group(0) if match.group(1) else replace(match))
        pos = match.end()
    out.append(formula[pos:])
    return "".join(out)


def _proportional_factor(noise_text, observable_text, dynamic):
    """c when noise = c * observable with c free of model quantities (``dynamic``), else None."""
    import sympy as sp
    names = set(_IDENTIFIER.findall(noise_text)) | set(_IDENTIFIER.findall(observable_text))
    local = {n: sp.Symbol(n) for n in names if n not in _FUNCTIONS}
    try:
        ratio = sp.simplify(sp.sympify(noise_text, locals=local) / sp.sympify(observable_text, locals=local))
    except (sp.SympifyError, TypeError, ValueError):
        return None
    if {str(v) for v in ratio.free_symbols} & dynamic:
        return None
    return str(ratio)


def read_petab(path) -> PetabTranslation:
    """Read and translate a PEtab v1 problem (see the module docstring)."""
    petab = _petab()
    import pandas as pd
    from ..model.core import Model
    from ..model.expressions import RESERVED
    from .sbml import translate_sbml
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise DataError(f"{origin}: PEtab problem file not found")
    try:
        config = petab.yaml.load_yaml(path)
    except Exception as exc:  # noqa: BLE001 - a YAML or schema error, reported with the file
        raise DataError(f"{origin}: not a readable PEtab YAML file ({exc})") from None
    version = str(config.get("format_version", "1"))
    if not version.startswith("1"):
        raise PetabUnsupported(f"{origin}: format_version {version}: kinetics reads PEtab v1 problems only")
    problems = config.get("problems") or []
    if len(problems) != 1:
        raise PetabUnsupported(f"{origin}: problems lists {len(problems)} problems; kinetics reads exactly one")
    entry = problems[0]
    sbml_files = entry.get("sbml_files") or []
    if len(sbml_files) != 1:
        raise PetabUnsupported(f"{origin}: problems[0].sbml_files lists {len(sbml_files)} models; kinetics reads exactly one")
    base = path.parent

    def tables(key, reader):
        files = entry.get(key) or []
        if not files:
            return None
        frames = [reader(str(base / f)) for f in files]
        return pd.concat(frames) if len(frames) > 1 else frames[0]
    import warnings
    try:
        with warnings.catch_warnings():     # the petab library's own pandas deprecations
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=Warning, module="petab")
            conditions_df = tables("condition_files", petab.get_condition_df)
            measurements_df = tables("measurement_files", petab.get_measurement_df)
            observables_df = tables("observable_files", petab.get_observable_df)
            parameters_df = petab.get_parameter_df(str(base / config["parameter_file"]))
    except Exception as exc:  # noqa: BLE001 - a table that pandas/petab cannot read
        raise DataError(f"{origin}: cannot read the PEtab tables ({type(exc).__name__}: {exc})") from None
    if measurements_df is None or observables_df is None:
        raise DataError(f"{origin}: a PEtab problem needs measurement and observable files")
    if conditions_df is None:
        conditions_df = pd.DataFrame(index=pd.Index([], name="conditionId"))
    translation = translate_sbml(base / sbml_files[0])
    model_dict = translation.model
    outputs = translation.outputs
    model_dict.setdefault("parameters", {})
    model_params = model_dict["parameters"]
    taken = set(model_params) | set(model_dict.get("compartments", {})) | set(model_dict.get("assignments", {}))

    # ---- names: SBML ids through the importer's outputs, new parameters as themselves
    mapping = {sid: out["value"] for sid, out in outputs.items()}
    names = dict(translation.names)

    def new_name(pid):
        name = pid if pid not in RESERVED and pid not in taken else f"petab_{pid}"
        if name != pid:
            names[pid] = name
        taken.add(name)
        return name

    # ---- parameter table
    parameters, free = {}, []
    for row_number, (pid, row) in enumerate(parameters_df.iterrows(), start=2):
        where = f"{origin}: parameter table row {row_number} ({pid})"
        if pid in outputs and "amount" in outputs[pid]:
            raise PetabUnsupported(f"{where}, column parameterId: {pid} is a species; the parameter table may only "
                                   "list parameters")
        if pid in mapping:
            kname = mapping[pid]
            if not _IDENTIFIER.fullmatch(kname) or kname not in model_params:
                raise PetabUnsupported(f"{where}, column parameterId: {pid} is not a plain parameter of the model "
                                       f"(kinetics reads it as '{kname}')")
        else:
            kname = new_name(pid)
            mapping[pid] = kname
            model_params[kname] = {"value": 0.0}
        scale = str(row.get("parameterScale", "lin")).strip() or "lin"
        if scale not in ("lin", "log", "log10"):
            raise PetabUnsupported(f"{where}, column parameterScale: '{scale}' is not lin, log or log10")
        nominal = _number(row.get("nominalValue"))
        estimate = int(row.get("estimate", 1)) == 1
        if nominal is None or math.isnan(nominal):
            raise DataError(f"{where}, column nominalValue: needs a number")
        model_params[kname] = {k: v for k, v in model_params[kname].items() if k not in ("fixed", "min", "max")}
        model_params[kname]["value"] = nominal
        spec = {"value": nominal}
        if estimate:
            lo, hi = _number(row.get("lowerBound")), _number(row.get("upperBound"))
            if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
                raise DataError(f"{where}, columns lowerBound/upperBound: an estimated parameter needs both bounds")
            spec.update(min=lo, max=hi, scale=scale)
            prior = row.get("objectivePriorType")
            if not _is_nan(prior):
                values = _split(row.get("objectivePriorParameters"))
                if len(values) != 2:
                    raise DataError(f"{where}, column objectivePriorParameters: needs two numbers separated by ';'")
                spec["prior"] = [str(prior).strip(), *values]
            free.append(kname)
        else:
            spec.update(min=-math.inf, max=math.inf)
        parameters[kname] = spec

    # ---- species and compartments the condition table may set
    compartments = model_dict.get("compartments", {})
    rate_states = set(model_dict.get("rates", {}))

    def condition_value(text, where):
        number = _number(text)
        if number is not None:
            return repr(number)
        text = str(text).strip()
        if text in mapping and _IDENTIFIER.fullmatch(mapping[text]) and mapping[text] in model_params:
            return mapping[text]
        raise DataError(f"{where}: '{text}' is neither a number nor a parameter of the model or the parameter table")

    condition_specs = {}
    for row_number, (cid, row) in enumerate(conditions_df.iterrows(), start=2):
        overrides, initial = {}, {}
        for column, value in row.items():
            if column == "conditionName" or _is_nan(value):
                continue
            where = f"{origin}: condition table row {row_number} ({cid}), column {column}"
            text = condition_value(value, where)
            out = outputs.get(column)
            if column in mapping and mapping[column] in rate_states:
                # a quantity with a rate rule (a state holding its SBML value): its initial value
                initial[mapping[column]] = text
            elif out is not None and "amount" in out:       # a species: its initial value
                pool = out["amount"]
                if pool not in compartments:
                    raise PetabUnsupported(f"{where}: species {column} is not a pool of the model (it has a rule)")
                if out["value"] == out["amount"]:
                    initial[pool] = text
                else:
                    volume = compartments[pool].get("volume")
                    initial[pool] = f"({text}) * ({volume})"
            elif column in mapping and mapping[column] in model_params:
                overrides[mapping[column]] = text
            else:
                raise PetabUnsupported(f"{where}: {column} is not a parameter, species or constant compartment of "
                                       "the model")
        condition_specs[cid] = {"overrides": overrides, "initial": initial}

    # ---- observables
    observable_rows = {}
    for row_number, (oid, row) in enumerate(observables_df.iterrows(), start=2):
        observable_rows[oid] = (row_number, row)
    state_names = set(model_dict.get("compartments", {})) | rate_states

    # ---- measurements: conditions, observable instances, data
    instances, observables_spec, model_observables = {}, {}, dict(model_dict.get("observables", {}))
    conditions, records, keys = {}, [], []
    for row_number, (_, m) in enumerate(measurements_df.iterrows(), start=2):
        where = f"{origin}: measurement table row {row_number}"
        oid = m["observableId"]
        if oid not in observable_rows:
            raise DataError(f"{where}, column observableId: '{oid}' is not in the observable table")
        time = float(m["time"])
        if not math.isfinite(time):
            raise PetabUnsupported(f"{where}, column time: steady-state measurements (time inf) are not supported")
        sim = str(m["simulationConditionId"])
        preeq = m.get("preequilibrationConditionId")
        preeq = None if _is_nan(preeq) else str(preeq)
        for cid, column in ((sim, "simulationConditionId"), (preeq, "preequilibrationConditionId")):
            if cid is not None and cid not in condition_specs:
                raise DataError(f"{where}, column {column}: condition '{cid}' is not in the condition table")
        cname = sim if preeq is None else f"{sim}__after_{preeq}"
        if cname not in conditions:
            spec = dict(condition_specs.get(sim, {"overrides": {}, "initial": {}}))
            spec = {"name": cname, **spec, "preequilibration": None if preeq is None else
                    {"name": preeq, **condition_specs.get(preeq, {"overrides": {}, "initial": {}})}}
            conditions[cname] = spec
        orow_number, orow = observable_rows[oid]
        obs_pars = tuple(_split(m.get("observableParameters")))
        noise_pars = tuple(_split(m.get("noiseParameters")))
        key = (oid, obs_pars, noise_pars)
        if key not in instances:
            name = oid if not any(k[0] == oid for k in instances) else f"{oid}__{sum(k[0] == oid for k in instances) + 1}"
            if name in state_names or name in model_params:
                name = f"{name}__obs"
            instances[key] = name

            def placeholders(kind, values, column, formula_column):
                found = {}
                formula = str(orow.get(formula_column, ""))
                indices = sorted({int(mm.group(2)) for mm in (
                    _PLACEHOLDER.match(tok) for tok in _IDENTIFIER.findall(formula)) if mm and mm.group(1) == kind
                    and mm.group(3) == oid})
                if values and len(values) != len(indices):
                    raise DataError(f"{where}, column {column}: {len(values)} value(s) for the {len(indices)} "
                                    f"placeholder(s) of {formula_column} of observable {oid}")
                for i, value in zip(indices, values):
                    found[f"{kind}Parameter{i}_{oid}"] = condition_value(value, f"{where}, column {column}")
                return found

            local = dict(mapping)
            local.update(placeholders("observable", obs_pars, "observableParameters", "observableFormula"))
            local.update(placeholders("noise", noise_pars, "noiseParameters", "noiseFormula"))

            def unknown(ident, column):
                raise DataError(f"{origin}: observable table row {orow_number} ({oid}), column {column}: "
                                f"'{ident}' is neither a model entity nor a parameter of the parameter table"
                                + (" (a placeholder without a value in the measurement table's "
                                   f"{'observableParameters' if 'observable' in ident else 'noiseParameters'}, row "
                                   f"{row_number})" if _PLACEHOLDER.match(ident) else ""))
            expr = _substitute(orow["observableFormula"], local, lambda i: unknown(i, "observableFormula"))
            noise_formula = orow.get("noiseFormula")
            if _is_nan(noise_formula):
                raise DataError(f"{origin}: observable table row {orow_number} ({oid}), column noiseFormula: empty")
            noise_text = _substitute(noise_formula, local, lambda i: unknown(i, "noiseFormula"))
            noise_kind = "constant"
            dynamic = state_names | set(model_dict.get("assignments", {}))
            if set(_IDENTIFIER.findall(noise_text)) & dynamic:
                # sigma proportional to the observable (e.g. a relative error): c(parameters) * formula
                noise_text = _proportional_factor(noise_text, expr, dynamic)
                if noise_text is None:
                    raise PetabUnsupported(f"{origin}: observable table row {orow_number} ({oid}), column noiseFormula: "
                                           "reads model quantities other than as a factor times the observable "
                                           "formula; kinetics' noise formulas may use parameters, times the "
                                           "observable at most")
                noise_kind = "proportional"
            transformation = orow.get("observableTransformation")
            transformation = "lin" if _is_nan(transformation) else str(transformation).strip()
            distribution = orow.get("noiseDistribution")
            distribution = "normal" if _is_nan(distribution) else str(distribution).strip()
            if transformation not in ("lin", "log", "log10"):
                raise PetabUnsupported(f"{origin}: observable table row {orow_number} ({oid}), column "
                                       f"observableTransformation: '{transformation}' is not lin, log or log10")
            if distribution not in ("normal", "laplace"):
                raise PetabUnsupported(f"{origin}: observable table row {orow_number} ({oid}), column "
                                       f"noiseDistribution: '{distribution}' is not normal or laplace")
            model_observables[name] = {"expr": expr}
            observables_spec[name] = {"sigma": noise_text, "transformation": transformation,
                                      "distribution": distribution}
            if noise_kind == "proportional":
                observables_spec[name]["noise"] = "proportional"
        records.append({"condition": cname, "time": time, "observable": instances[key],
                        "value": float(m["measurement"])})
        keys.append((oid, sim, preeq))
    model_dict["observables"] = model_observables
    for kname in free:     # estimated parameters are not fixed in the model
        model_params[kname].pop("fixed", None)
    import warnings
    from ..errors import KineticsWarning
    with warnings.catch_warnings():
        # parameters only conditions or noise formulas use are expected here, not a slip
        warnings.filterwarnings("ignore", message=".*is not used by any flow", category=KineticsWarning)
        model = Model.from_dict(model_dict, source=origin)
    data = pd.DataFrame.from_records(records, columns=["condition", "time", "observable", "value"])
    return PetabTranslation(model=model, data=data, free=free, parameters=parameters,
                            conditions=list(conditions.values()), observables=observables_spec, names=names,
                            measurement_keys=keys, origin=origin,
                            tables={"measurements": measurements_df, "observables": observables_df,
                                    "conditions": conditions_df, "parameters": parameters_df})


def evaluate(problem, internal=None) -> dict:
    """PEtab's log-likelihood (priors excluded), chi2 and simulation table of a fit problem
    imported from PEtab (see :func:`kinetics.fitting.problem.load_petab`), at internal theta
    (default: the nominal values)."""
    import numpy as np
    x = problem.start() if internal is None else internal
    nll, _ = problem.negative_loglik(x, priors=False)
    out = {"llh": -float(nll), "chi2": float(problem.chi2(x)), "n_measurements": int(problem.n_data)}
    tr = getattr(problem, "petab", None)
    if tr is not None:
        f = problem.predict(x)[0]
        simulations = np.empty(problem.n_data)
        simulations[np.asarray(problem.rows, dtype=int) - 1] = f    # data row = measurement position + 1
        table = tr.tables["measurements"].copy()
        table.insert(table.columns.get_loc("measurement"), "simulation", simulations)
        out["simulations"] = table.drop(columns=["measurement"])
    return out


def _inline(text, replacements: dict) -> str:
    """Replace identifiers of kinetics expression text by other text (in parentheses)."""
    return _substitute(str(text), replacements, lambda name: None) if replacements else str(text)


#: lower bound of an exported noise scale, times its data scale (the RMS of the data for constant
#: noise, 1 for relative noise): below the rounding level of double-precision data (2.2e-16),
#: where kinetics' own likelihood floors the scale of a perfect fit
NOISE_SCALE_FLOOR = 1e-16
#: the upper bound of an exported noise scale is this factor times the largest scale a fit at
#: least as good as the exported point can have (and at least times the data scale)
NOISE_SCALE_MARGIN = 10.0


def profiled_noise_scale(problem, f) -> tuple:
    """(nominal value, lower bound, upper bound) of ``noise_sigma``, the PEtab parameter the noise
    scale s of noise "constant" / "proportional" becomes on export, at predictions ``f`` of the
    exported point. kinetics profiles s out in closed form (s^2 = RSS / N), unbounded; PEtab
    needs finite bounds (tools sample starts in them), chosen so that they cannot exclude the
    optimum of any fit at least as good as the exported point (a fit's first start is that
    point, so its best optimum is one):

    - nominal: the maximum-likelihood s at the exported point, so both likelihoods agree there;
    - upper: ``NOISE_SCALE_MARGIN`` x the largest s such a fit can have. Constant noise:
      -loglik = N log s + const, so a better fit has a smaller s: s0 bounds it. Proportional
      noise (sigma_i = s |f_i|, |f_i| floored at ``problem.prediction_floor()`` d): -loglik =
      N log s + sum log |f_i| + const, so log s <= log s0 + log(G0 / G) with G the geometric mean
      of the floored |f_i|, and G >= d: s <= s0 G0 / d. At least the margin times the data scale
      (RMS of the data for constant noise, 1 for relative noise), so a fit's own optimum is never
      on the bound;
    - lower: ``NOISE_SCALE_FLOOR`` x the data scale (perfect fits of exact data only go lower).
    """
    import numpy as np
    y = problem.y
    n = len(y)
    if problem.noise == "constant":
        r = problem.weights * (y - f)
        data_scale = math.sqrt(float(np.mean((problem.weights * y) ** 2))) or 1.0
        s0 = math.sqrt(float(r @ r) / n)
        reach = s0
    elif problem.noise == "proportional":
        floor = problem.prediction_floor()
        magnitude = np.maximum(np.abs(f), floor)
        r = (y - f) / magnitude
        data_scale = 1.0
        s0 = math.sqrt(float(r @ r) / n)
        reach = s0 * math.exp(float(np.mean(np.log(magnitude)))) / floor
    else:
        raise ValueError(f"noise = {problem.noise!r} has no profiled noise scale (constant or proportional only)")
    lower = NOISE_SCALE_FLOOR * data_scale
    # a perfect fit at the exported point: s at kinetics' own floor, the rounding level
    nominal = max(s0, lower)
    return nominal, lower, NOISE_SCALE_MARGIN * max(reach, data_scale)


def write_petab(problem, out_dir, values=None) -> Path:
    """Write a kinetics fit problem as a PEtab v1 problem in ``out_dir`` (model.xml, the four
    tables, problem.yaml); returns the YAML path. ``values`` (fit parameter name -> value)
    replaces the nominal values, e.g. a fit's estimates.

    Conditions become indicator parameters ``petab_in_<condition>`` (0, set to 1 by the
    condition table): a parameter P a condition overrides with an expression e is replaced in
    every model expression by ``P + in * (e - P)``, and so are initial values and bolus doses at
    t = 0, so that expressions of parameters, which PEtab's condition table cannot hold, stay
    exact. A profiled noise scale (noise "constant" / "proportional") becomes an estimated noise
    parameter with its maximum-likelihood value at the nominal point as nominal value, so the
    likelihood there is the same, and bounds that cannot exclude the optimum
    (:func:`profiled_noise_scale`); other estimated parameters keep their own bounds; "data" sigmas and "combined" noise (at its estimates) become
    numeric noise parameters. Doses after t = 0, infusions and timed events are refused."""
    import numpy as np
    import pandas as pd
    import yaml
    from ..model.core import Model
    from .sbml import write_sbml
    from .files import atomic_write
    out = Path(out_dir)
    origin = getattr(problem, "origin", "fit problem")
    model_dict = problem.model.to_dict()
    params = model_dict.setdefault("parameters", {})
    phi = problem.fit_values.copy()
    for name, value in (values or {}).items():
        if name in problem.fit_names:
            phi[problem.fit_names.index(name)] = float(value)
    value_of = dict(zip(problem.fit_names, phi))
    computed = set(problem.compiled.computed_parameters)
    for name, value in value_of.items():      # fit-level parameters join the model; values as fitted
        if name in computed:
            continue
        entry = params.setdefault(name, {})
        if not isinstance(entry, dict):
            entry = params[name] = {"value": entry}
        entry["value"] = float(value)
        entry.pop("fixed", None)
        entry.pop("min", None)
        entry.pop("max", None)
    # ---- conditions through indicator parameters
    plans = problem.plans
    overrides, initial_by_condition = {}, {}
    pools = model_dict.get("compartments", {})
    for plan in plans:
        cond = problem.conditions[plan["name"]]
        where = f"{origin}: [conditions.{cond.name}]"
        if getattr(cond, "preequilibration", None) is not None:
            raise PetabUnsupported(f"{where}: re-exporting pre-equilibration is not supported")
        if cond.events:
            raise PetabUnsupported(f"{where}: timed events (parameter changes at t > 0) have no PEtab v1 form")
        initial = {k: str(v) for k, v in cond.initial.items()}
        for dose in cond.doses:
            if getattr(dose, "amount", None) is None or dose.time != 0:
                raise PetabUnsupported(f"{where}: only bolus doses at t = 0 have a PEtab v1 form (as initial "
                                       f"values); this condition has {dose}")
            base = initial.get(dose.compartment, pools.get(dose.compartment, {}).get("initial", 0))
            initial[dose.compartment] = f"({base}) + {float(dose.amount)!r}"
        indicator = f"petab_in_{_safe(cond.name)}"
        params[indicator] = {"value": 0.0}
        for pname, expr in cond.overrides.items():
            overrides.setdefault(pname, []).append((indicator, str(expr)))
        for pool, expr in initial.items():
            initial_by_condition.setdefault(pool, []).append((indicator, expr))
    replacements = {p: f"{p} + " + " + ".join(f"{ind} * (({e}) - {p})" for ind, e in pairs)
                    for p, pairs in overrides.items()}

    def rewrite(text):
        return _inline(text, replacements)
    for section in ("flows", "reactions"):
        for entry in model_dict.get(section, {}).values():
            entry["rate"] = rewrite(entry["rate"])
    for key in list(model_dict.get("assignments", {})):
        model_dict["assignments"][key] = rewrite(model_dict["assignments"][key])
    for key in list(model_dict.get("rates", {})):
        model_dict["rates"][key] = rewrite(model_dict["rates"][key])
    for name, entry in model_dict.get("observables", {}).items():
        entry["expr"] = rewrite(entry["expr"])
    for pool, entry in pools.items():
        base = str(entry.get("initial", 0))
        pairs = initial_by_condition.get(pool, [])
        text = f"({base})" + "".join(f" + {ind} * (({e}) - ({base}))" for ind, e in pairs)
        entry["initial"] = rewrite(text)
    # ---- observables, noise and measurements
    x = problem.to_internal(np.array([value_of[n] for n in problem.free]))
    f = problem.predict(x)[0]
    y = problem.y
    rows_obs = np.concatenate([p["rows"]["observable"].to_numpy() for p in plans])
    rows_cond = np.concatenate([[p["name"]] * len(p["rows"]) for p in plans])
    rows_time = np.concatenate([p["rows"]["time"].to_numpy(float) for p in plans])
    observable_records, noise_pars = [], [""] * len(y)
    extra_parameters = []      # (id, nominal, lo, hi, estimate, scale)
    noise = problem.noise
    if noise in ("constant", "proportional"):
        if "noise_sigma" in problem.fit_names:
            raise PetabUnsupported(f"{origin}: the exported noise scale is the parameter noise_sigma, but the fit "
                                   "problem already has a parameter of that name; rename it")
        extra_parameters.append(("noise_sigma", *profiled_noise_scale(problem, f), 1, "log10"))
    elif noise == "combined":
        a, b = (values or {}).get("sigma_abs"), (values or {}).get("sigma_rel")
        if a is None or b is None:
            raise PetabUnsupported(f"{origin}: combined noise exports from a finished fit (its sigma_abs, sigma_rel)")
        sig = np.sqrt(a * a + b * b * y * y)
    model_observables = model_dict.get("observables", {})
    for oname in dict.fromkeys(rows_obs):
        # a model observable's expression (already rewritten), or a pool (an amount species)
        formula = f"({model_observables[oname]['expr']})" if oname in model_observables else oname
        maps = problem.observable_spec.get(oname, {}) if isinstance(problem.observable_spec.get(oname), dict) else {}
        if "scale" in maps:
            formula = f"({maps['scale']}) * ({formula})"
        if "offset" in maps:
            formula = f"{formula} + ({maps['offset']})"
        transformation, distribution = "lin", "normal"
        if noise == "constant":
            sigma = "noise_sigma"
        elif noise == "proportional":
            sigma = f"noise_sigma * ({formula})"
        elif noise in ("data", "combined"):
            sigma = f"noiseParameter1_{oname}"
        else:
            entry = problem.noise_entries[oname] if hasattr(problem, "noise_entries") else {}
            transformation, distribution = entry["transformation"], entry["distribution"]
            if entry["kind"] == "data":
                sigma = f"noiseParameter1_{oname}"
            elif entry["kind"] == "proportional":
                sigma = f"({entry['sigma']}) * ({formula})"
            else:
                sigma = str(entry["sigma"])
        # scale, offset and sigma are expressions of the fit parameters themselves, never of a
        # condition's overridden values: they are not rewritten
        observable_records.append({"observableId": f"obs_{oname}", "observableFormula": formula,
                                   "noiseFormula": sigma, "observableTransformation": transformation,
                                   "noiseDistribution": distribution})
    data_sigma = np.concatenate([p["rows"]["sigma"].to_numpy(float) for p in plans])
    for i in range(len(y)):
        kind = noise if noise != "per-observable" else problem.noise_entries[rows_obs[i]]["kind"]
        if kind == "data":
            noise_pars[i] = repr(float(data_sigma[i]))
        elif kind == "combined":
            noise_pars[i] = repr(float(sig[i]))
    # model observables for the measured states are their names already (pools are amounts)
    measurement_records = [{"observableId": f"obs_{rows_obs[i]}", "simulationConditionId": _safe(rows_cond[i]),
                            "time": rows_time[i], "measurement": y[i], "noiseParameters": noise_pars[i]}
                           for i in range(len(y))]
    condition_records = []
    indicators = [f"petab_in_{_safe(p['name'])}" for p in plans]
    for plan, ind in zip(plans, indicators):
        condition_records.append({"conditionId": _safe(plan["name"]), **{i: float(i == ind) for i in indicators}})
    parameter_records, unbounded = [], []
    for name in problem.free:
        k = problem.fit_names.index(name)
        # the parameter's own bounds (fit spec, else model), so the optimization problem is the
        # same; infinite ones stay infinite (any finite choice could exclude the optimum)
        lo, hi = problem.fit_bounds[k]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            unbounded.append(name)
        scale = problem.scales.get(name, "lin") if hasattr(problem, "scales") else "lin"
        record = {"parameterId": name, "parameterScale": scale, "lowerBound": lo, "upperBound": hi,
                  "nominalValue": float(value_of[name]), "estimate": 1}
        prior = getattr(problem, "priors", {}).get(name)
        if prior:
            record.update(objectivePriorType=prior[0], objectivePriorParameters=f"{prior[1]!r};{prior[2]!r}")
        parameter_records.append(record)
    for pid, nominal, lo, hi, estimate, scale in extra_parameters:
        params[pid] = {"value": float(nominal)}
        parameter_records.append({"parameterId": pid, "parameterScale": scale, "lowerBound": lo, "upperBound": hi,
                                  "nominalValue": nominal, "estimate": estimate})
    import warnings
    from ..errors import KineticsWarning
    if unbounded:
        warnings.warn(f"{origin}: {', '.join(unbounded)} {'has' if len(unbounded) == 1 else 'have'} infinite bounds, "
                      "written as such (the same problem as kinetics fits); PEtab tools that draw starts between "
                      "the bounds need finite ones: give min and max in [parameters]", KineticsWarning, stacklevel=2)
    with warnings.catch_warnings():   # indicators and noise parameters are used by the tables only
        warnings.filterwarnings("ignore", message=".*is not used by any flow", category=KineticsWarning)
        exported = Model.from_dict(model_dict, source=origin)
    out.mkdir(parents=True, exist_ok=True)
    write_sbml(exported, out / "model.xml")
    tables = {"conditions.tsv": condition_records, "measurements.tsv": measurement_records,
              "observables.tsv": observable_records, "parameters.tsv": parameter_records}
    for filename, records in tables.items():
        frame = pd.DataFrame.from_records(records)
        atomic_write(out / filename, frame.to_csv(sep="\t", index=False))
    config = {"format_version": 1, "parameter_file": "parameters.tsv",
              "problems": [{"sbml_files": ["model.xml"], "condition_files": ["conditions.tsv"],
                            "measurement_files": ["measurements.tsv"], "observable_files": ["observables.tsv"]}]}
    path = out / "problem.yaml"
    atomic_write(path, yaml.safe_dump(config, sort_keys=False))
    return path


def _safe(name) -> str:
    """A PEtab identifier for a kinetics name (conditions may be any text)."""
    text = re.sub(r"\W", "_", str(name))
    return text if _IDENTIFIER.fullmatch(text) else f"c_{text}"
