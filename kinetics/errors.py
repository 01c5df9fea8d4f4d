"""Error and warning types: every failure a user can cause has one, with a message that
names the file, the entry or row, the offending text and what to do about it."""


class KineticsError(Exception):
    """Base class of every error kinetics raises on purpose (the CLI prints these without a
    traceback)."""


class ModelError(KineticsError, ValueError):
    """A model file or Python-built model is malformed (names, expressions, bounds, units)."""


class ExpressionError(ModelError):
    """A rate or observable expression is not allowed (unknown name, forbidden construct)."""


class UnitError(ModelError):
    """Declared units are dimensionally inconsistent."""


class DataError(KineticsError, ValueError):
    """A data table or fit specification is malformed."""


class SolverError(KineticsError, RuntimeError):
    """A simulation failed; the message carries the parameter values at failure."""


class FitError(KineticsError, RuntimeError):
    """Fitting could not proceed or produced no usable optimum."""


class KineticsWarning(UserWarning):
    """Something suspicious but not fatal (an unused parameter, a non-identifiable estimate)."""


def suggest_name(name, candidates) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to a misspelled ``name``, or ``""``:
    the hint every "unknown name" message in kinetics ends with."""
    import difflib

    hint = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
