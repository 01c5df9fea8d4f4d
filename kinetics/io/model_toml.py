"""The model file format (TOML): reading a file, and the schema of its tables.

:func:`read_model_toml` reads a model file into the parsed table and the SHA-256 of its bytes;
``ENTRY_KEYS`` / ``GENERAL_KEYS`` / ``TOP_KEYS`` name the keys each section allows and
:func:`type_problem` checks a key's TOML type. Building a :class:`~kinetics.model.core.Model`
from the table (the same table SBML import produces) is :meth:`Model.from_dict`'s job; this
module knows nothing of models, so ``kinetics.model.core`` imports it, never the reverse.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..model.expressions import shorten
from .files import read_toml_file

__all__ = ["ModelFile", "read_model_toml", "ENTRY_KEYS", "GENERAL_KEYS", "TOP_KEYS", "KEY_TYPES",
           "toml_type_name", "type_problem", "describe_value"]

#: sections of the flow form and the keys their entries allow
ENTRY_KEYS = {
    "compartments": {"initial", "unit", "description", "volume", "boundary"},
    "parameters": {"value", "min", "max", "fixed", "unit", "description"},
    "flows": {"from", "to", "rate", "description"},
    "observables": {"expr", "unit", "description"},
}
#: sections of the general form, read after the ones above
GENERAL_KEYS = {
    "reactions": {"reactants", "products", "rate", "description"},
    "assignments": {"expr", "unit", "description"},
    "rates": {"expr", "description"},
    "events": {"trigger", "assign", "fire_at_start", "persistent", "description"},
}
TOP_KEYS = {"name", "description", "time_unit", *ENTRY_KEYS, *GENERAL_KEYS}

# The TOML type each key must have: (Python types, what to call them in a message). Keys not
# listed here are checked where they are used.
_NUMBER = ((int, float), "a number")
_TEXT = ((str,), "a string")
_EXPRESSION = ((int, float, str), "a number or an expression string")
KEY_TYPES = {
    "name": _TEXT, "description": _TEXT, "time_unit": _TEXT, "unit": _TEXT, "from": _TEXT, "to": _TEXT,
    "initial": _EXPRESSION, "rate": _EXPRESSION, "expr": _EXPRESSION,
    "value": _EXPRESSION, "min": _NUMBER, "max": _NUMBER, "fixed": ((bool,), "true or false"),
    "volume": _EXPRESSION, "trigger": _TEXT, "boundary": ((bool,), "true or false"),
    "fire_at_start": ((bool,), "true or false"), "persistent": ((bool,), "true or false"),
}


@dataclass(frozen=True)
class ModelFile:
    """A model file as read: its parsed table, where it came from, and its bytes' SHA-256."""
    data: dict
    source: str
    default_name: str
    sha256: str


def read_model_toml(path) -> ModelFile:
    """Read a TOML model file (a regular UTF-8 file of bounded size and nesting); a
    :class:`~kinetics.errors.ModelError` names the file and what is wrong."""
    path = Path(path)
    data, raw = read_toml_file(path, what="model file", error=ModelError)
    return ModelFile(data, str(path), path.stem, hashlib.sha256(raw).hexdigest())


def toml_type_name(value) -> str:
    """What a parsed TOML value is, in TOML's words."""
    if isinstance(value, bool):
        return "a boolean"
    for kind, word in ((int, "an integer"), (float, "a float"), (str, "a string"), (dict, "a table"), (list, "a list")):
        if isinstance(value, kind):
            return word
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date or time"
    return f"a {type(value).__name__}"


def type_problem(key, value):
    """A message if ``value`` has the wrong type for ``key``, else None."""
    expected = KEY_TYPES.get(key)
    if expected is None:
        return None
    types, words = expected
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return None
    return f"'{key}' must be {words}, got {describe_value(value)}"


def describe_value(value) -> str:
    """A parsed value for a message: shortened, and what TOML type it is."""
    shown = f"'{shorten(value, 40)}'" if isinstance(value, str) else shorten(value, 40)
    return f"{shown} ({toml_type_name(value)})"
