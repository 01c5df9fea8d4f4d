"""The bundled model library (the repository's ``models/`` folder): find models by name."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ..errors import ModelError

__all__ = ["models_dir", "bundled_models", "resolve_model_path"]


def models_dir() -> Path:
    """``$KINETICS_MODELS`` if set, else the ``models/`` folder beside the package."""
    env = os.environ.get("KINETICS_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def bundled_models() -> dict[str, dict]:
    """name -> {path, description, time_unit} for every bundled model file."""
    out = {}
    folder = models_dir()
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            data = {}
        out[path.stem] = {"path": path, "description": str(data.get("description", "")), "time_unit": data.get("time_unit", "h")}
    return out


def resolve_model_path(name_or_path) -> Path:
    """A model file path from a path or the name of a bundled model."""
    path = Path(name_or_path)
    if path.suffix in (".toml", ".xml") or path.exists():
        if not path.exists():
            raise ModelError(f"{path}: model file not found")
        return path
    library = bundled_models()
    if str(name_or_path) in library:
        return library[str(name_or_path)]["path"]
    import difflib
    hint = difflib.get_close_matches(str(name_or_path), list(library), n=1)
    raise ModelError(f"'{name_or_path}' is neither a model file nor a bundled model"
                     + (f" (did you mean '{hint[0]}'?)" if hint else "") + "; run 'kinetics models' for the list")
