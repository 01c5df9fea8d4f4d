"""Atomic file output: a result is written to a temporary file beside its destination and
renamed into place, so an existing result is never half-overwritten."""

from __future__ import annotations

import os
import stat
import tempfile
import tomllib
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "atomic_path"]


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path, content: str | bytes) -> Path:
    """Write text or bytes to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
    return Path(path)


# ----------------------------------------------------------------------------- safe reading
# Every file a user names (model files, fit specs, data CSVs) is read through these helpers, so
# a FIFO cannot hang a command, /dev/zero cannot fill memory, and a Latin-1, binary or absurdly
# nested file gets one message naming the file and the fix.
__all__ += ["read_regular_file", "decode_utf8", "read_toml_file", "parse_toml_text", "sanitize_excerpt",
            "TEXT_SIZE_LIMIT", "DATA_SIZE_LIMIT"]

MB = 1024 * 1024
TEXT_SIZE_LIMIT = 10 * MB       # model files and fit specs
DATA_SIZE_LIMIT = 50 * MB       # data CSVs
MAX_TOML_DEPTH = 50             # nesting of tables/arrays; real files use 3 or 4
_EXCERPT_LENGTH = 40


def sanitize_excerpt(text, limit: int = _EXCERPT_LENGTH) -> str:
    """``text`` cut to ``limit`` characters, with control characters (terminal escapes, NUL,
    newlines) shown as ``?``: safe to put in a message about a file that may be anything."""
    text = str(text)
    cut = text[:limit]
    cleaned = "".join(c if c.isprintable() else "?" for c in cut)
    return cleaned + ("..." if len(text) > limit else "")


def read_regular_file(path, *, what: str, error: type[Exception], limit: int = TEXT_SIZE_LIMIT,
                      not_found_hint: str = "", folder_fix: str = "give the path of the file itself") -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes (``what`` names the kind
    of file in messages; ``error`` is the exception class raised for any problem)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found{not_found_hint}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror}); check that it exists and "
                    f"that you may read it") from None
    except ValueError:         # a NUL character in the path
        raise error(f"{sanitize_excerpt(path, 200)}: not a valid file name (it contains a NUL "
                    f"character); correct the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: cannot read it as a {what}: it is a folder; {folder_fix}")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: is not a regular file (a pipe, device or socket); a {what} must be an "
                    f"ordinary file: save the content to a file and give its path")
    if info.st_size > limit:
        raise error(f"{path}: the {what} is {info.st_size / MB:.1f} MB, more than the limit of "
                    f"{limit // MB} MB; check that this is the right file, or split it")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO after the check, open must not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror}); check that you may read "
                    f"it") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: is not a regular file (a pipe, device or socket); a {what} must "
                        f"be an ordinary file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 * MB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None
    finally:
        os.close(fd)
    if total > limit:      # the file grew after the size check
        raise error(f"{path}: the {what} is larger than the limit of {limit // MB} MB; check that "
                    f"this is the right file, or split it")
    return b"".join(chunks)


def decode_utf8(raw: bytes, path, *, what: str, error: type[Exception], line_word: str = "line",
                save_as: str = "UTF-8") -> str:
    """``raw`` decoded as UTF-8 (a leading byte-order mark is dropped); a Latin-1 or binary file
    is reported with the line (``line_word``: 'row' for CSV) and byte offset of the first
    undecodable byte."""
    if b"\x00" in raw[:8192]:
        raise error(f"{path}: not a text file (it contains NUL bytes, so it looks binary); a {what} "
                    f"is UTF-8 text: give the right file, or save it as {save_as}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"{path}: {line_word} {line} (byte offset {exc.start}): not UTF-8 text (byte "
                    f"0x{raw[exc.start]:02x}, e.g. a Latin-1 or Windows-1252 character); save the "
                    f"file as {save_as}") from None


def toml_depth(value) -> int:
    """Nesting depth of parsed TOML (tables and arrays), computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_toml_text(text: str, path, *, what: str, error: type[Exception]) -> dict:
    """Parsed TOML; invalid or pathologically nested TOML raises ``error`` naming ``path``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}. Check quoting and that no key is written "
                    f"twice.") from None
    except RecursionError:     # the parser recurses once per nested array or inline table
        raise error(f"{path}: the {what} nests arrays or tables too deeply to read (more than "
                    f"{MAX_TOML_DEPTH} levels); a {what} needs only a few levels: check that this "
                    f"is the right file") from None
    if toml_depth(data) > MAX_TOML_DEPTH:
        raise error(f"{path}: the {what} nests arrays or tables more than {MAX_TOML_DEPTH} levels "
                    f"deep; a {what} needs only a few levels: check that this is the right file")
    return data


def read_toml_file(path, *, what: str, error: type[Exception],
                   limit: int = TEXT_SIZE_LIMIT) -> tuple[dict, bytes]:
    """(parsed TOML, raw bytes) of a regular UTF-8 TOML file of at most ``limit`` bytes."""
    raw = read_regular_file(path, what=what, error=error, limit=limit)
    text = decode_utf8(raw, path, what=what, error=error)
    return parse_toml_text(text, path, what=what, error=error), raw
