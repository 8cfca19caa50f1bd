"""Deterministic, crash-safe file I/O shared by every stage.

* Every writer goes through a temporary file in the target directory and an atomic rename, so a
  crash never leaves a half-written artifact that Snakemake (or a user) would mistake for output.
* JSON is written with sorted keys and no timestamps, so the same inputs give the same bytes.
* Readers raise :class:`DataError` naming the file and the 1-based line of the bad record.
* Speed: where ``orjson`` is installed, :func:`read_jsonl` takes a line whose bytes are exactly
  ``orjson``'s serialisation of what ``orjson`` parsed from it (the pipeline's own files are
  written that way) as read; any other line goes through the strict checks of
  :func:`parse_json_line`, which give the same value or the same error as before.
  :func:`dumps_bytes` is :func:`dumps` as UTF-8 bytes, through ``orjson`` where the bytes are
  provably the same.
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

try:  # optional speed-up (same values, same bytes, same errors); see the module docstring
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by the fallback test
    _orjson = None


class DataError(ValueError):
    """Bad input data. The message always names the file (and the line/record where known)."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None,
                 record: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f" (record {record!r})"
        # One printable line whatever the data holds: no raw newlines, no lone surrogates.
        text = f"{where}: {message}".replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(text.encode("utf-8", "backslashreplace").decode("utf-8"))
        self.path = str(path)
        self.line = line
        self.record = record

    def __reduce__(self):   # the same error out of a worker process (pickled by multiprocessing)
        return _data_error, (self.args[0], self.path, self.line, self.record)


def _data_error(text: str, path: str, line: int | None, record: str | None) -> DataError:
    err = DataError.__new__(DataError)
    ValueError.__init__(err, text)
    err.path, err.line, err.record = path, line, record
    return err


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary sibling of ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def dumps(obj: Any, indent: int | None = None) -> str:
    """Canonical JSON: sorted keys, UTF-8 kept, stable separators."""
    if indent is None:
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=indent)


_LEAVES = frozenset({str, bool, type(None)})


def _plain(obj: Any) -> bool:
    """Whether ``obj`` holds only dicts with str keys, lists, str, bool, None and ints within
    64 bits: the values :func:`dumps` and ``orjson`` serialise to the same bytes (floats differ:
    ``1e-05`` against ``1e-5``, NaN against ``null``)."""
    t = type(obj)
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str or (type(v) not in _LEAVES and not _plain(v)):
                return False
        return True
    if t is list:
        for v in obj:
            if type(v) not in _LEAVES and not _plain(v):
                return False
        return True
    if t in _LEAVES:
        return True
    return t is int and -(1 << 63) <= obj < (1 << 64)


def dumps_bytes(obj: Any, plain: bool = False) -> bytes:
    """``dumps(obj).encode("utf-8")``, through ``orjson`` for the values where its bytes are the
    same (:func:`_plain`: every code point is escaped alike, keys sort alike; ``plain=True``: the
    caller knows it is, e.g. a copy of a value read from a line that was); anything else, errors
    included, as :func:`dumps` gives it."""
    if _orjson is not None:
        try:
            if plain or _plain(obj):
                return _orjson.dumps(obj, option=_orjson.OPT_SORT_KEYS)
        except (TypeError, ValueError, RecursionError):   # a lone surrogate, deep nesting
            pass
    return dumps(obj).encode("utf-8")


def loads_fast(raw: bytes) -> Any:
    """``json.loads`` of the pipeline's own simple files (no NaN, no duplicate keys, integers
    within 64 bits), through ``orjson`` where installed. A caller that checks the value's types
    parses a line again with ``json.loads`` before it refuses it (orjson reads an integer over
    64 bits as a float)."""
    if _orjson is not None:
        try:
            return _orjson.loads(raw)
        except ValueError:
            pass
    return json.loads(raw)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as fh:
        fh.write(dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    n = 0
    with atomic_open(path) as fh:
        for rec in records:
            fh.write(dumps(rec) + "\n")
            n += 1
    return n


def write_lines(path: str | os.PathLike, lines: Iterable[bytes]) -> int:
    """Write JSON Lines given as their bytes (each without its newline), atomically; the fast
    form of :func:`write_jsonl` when the lines are ``dumps_bytes`` of the records or lines read
    back by :func:`read_jsonl_lines`."""
    lines = list(lines)
    with atomic_open(path, "wb") as fh:
        fh.write(b"\n".join(lines))
        if lines:
            fh.write(b"\n")
    return len(lines)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


# ---------------------------------------------------------------------------------------------
# Readers. Every way a file can be malformed ends in one DataError line naming the file, the
# 1-based line and, where it can be found, the record id (data/README.md, "Bad input").

#: Longest JSON Lines line accepted, in bytes (without the newline). A chat record of the release
#: is at most a few hundred KB; a longer line is a JSON array or a binary file under a .jsonl name.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Deepest JSON nesting accepted (a released record is 4 levels deep; Python's parser itself
#: fails at about 1,000 levels with a RecursionError, which is reported as this error as well).
MAX_JSON_DEPTH = 64

# Byte signatures of things that are not UTF-8 JSON text. UTF-32 before UTF-16 (same prefix).
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32-LE"), (codecs.BOM_UTF32_BE, "UTF-32-BE"),
         (codecs.BOM_UTF16_LE, "UTF-16-LE"), (codecs.BOM_UTF16_BE, "UTF-16-BE"))
_MAGIC = ((b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
          (b"PK\x03\x04", "a zip archive"),
          (b"BZh", "bzip2-compressed data (decompress it first)"),
          (b"\xfd7zXZ\x00", "xz-compressed data (decompress it first)"),
          (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
          (b"PAR1", "a Parquet file, not JSON"),
          (b"version https://git-lfs", "a Git LFS pointer, not the data (fetch the LFS object)"))
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ID_GUESS = re.compile(rb'"id"\s*:\s*"((?:[^"\\\n]|\\.){1,200})"')


def _check_head(path: Path, head: bytes) -> int:
    """Refuse non-UTF-8 encodings and binary formats by their first bytes; return the number of
    bytes to skip (3 for a UTF-8 byte order mark, which is accepted and dropped)."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise DataError(path, f"file is {name} text (byte order mark {bom.hex()}); "
                                  "only UTF-8 is accepted, re-encode it as UTF-8", line=1)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise DataError(path, f"file is {what}; expected UTF-8 JSON text", line=1)
    return len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0


def _guess_id(raw: bytes) -> str | None:
    """The record id of a line that cannot be read as a whole (for the error message only)."""
    m = _ID_GUESS.search(raw)
    if not m:
        return None
    try:
        rid = json.loads(b'"' + m.group(1) + b'"')
    except ValueError:
        return None
    return rid if isinstance(rid, str) else None


def _decode(raw: bytes, path: Path, line: int | None, *, at_eof: bool, offset: int = 0) -> str:
    """Strict UTF-8 decoding with a message that says what the bytes probably are."""
    unit = "line" if line is not None else "file"
    if b"\x00" in raw:
        col = raw.index(b"\x00") + 1
        lineno = line if line is not None else raw.count(b"\n", 0, col) + 1
        raise DataError(path, f"NUL byte at byte {col + offset} of the {unit}: UTF-16/UTF-32 text without a byte "
                              "order mark, or binary data; only UTF-8 JSON is accepted",
                        line=lineno, record=_guess_id(raw.replace(b"\x00", b"")))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = line if line is not None else raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start:exc.end]
        if exc.reason == "unexpected end of data" and at_eof:
            msg = (f"file ends inside a multi-byte UTF-8 character (bytes {bad.hex()}); "
                   "the file is truncated")
        else:
            msg = (f"not valid UTF-8 (byte 0x{bad[0]:02x} at byte {exc.start + 1 + offset} of the {unit}: "
                   f"{exc.reason}); Latin-1/cp1252 or another encoding? re-encode it as UTF-8")
        raise DataError(path, msg, line=lineno, record=_guess_id(raw)) from None


def _no_nan(name: str):
    raise ValueError(f"non-standard JSON constant {name} (NaN/Infinity are not JSON)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows to infinity")
    return value


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(f"duplicate key {k!r} in one JSON object (which value counts "
                                    "is undefined)")
            seen.add(k)
    return obj


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_no_nan, parse_float=_finite_float,
                      object_pairs_hook=_unique_keys)


def _json_error_hint(exc: json.JSONDecodeError, text: str, jsonl: bool = True,
                     at_eof: bool = False) -> str:
    """One-line explanation of a JSON syntax error, with the most likely cause."""
    where = f"column {exc.colno}"
    if exc.msg.startswith("Unexpected UTF-8 BOM"):
        return "a UTF-8 byte order mark inside the file (files concatenated?)"
    if exc.msg.startswith("Invalid control character"):
        ch = text[exc.pos] if exc.pos < len(text) else "?"
        return (f"raw control character U+{ord(ch):04X} inside a string at {where} "
                "(JSON requires it escaped as \\uXXXX)")
    stripped = text.lstrip()
    if stripped.startswith("<"):
        return f"HTML/XML, not JSON (an error page saved as data?) ({exc.msg}, {where})"
    if jsonl and stripped.startswith("[") and exc.pos >= len(text.rstrip()):
        return (f"a line starting with '[' that does not close: the file looks like one JSON "
                f"array or pretty-printed JSON, not JSON Lines ({exc.msg}, {where})")
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string") or at_eof:
        return f"invalid JSON ({exc.msg}, {where}); is the {'line' if jsonl else 'file'} truncated?"
    return f"invalid JSON ({exc.msg}, {where})"


def _short(where: str) -> str:
    return where if len(where) <= 60 else where[:60] + "..."


def _walk_check(obj: Any, deep: bool, surrogates: bool) -> str | None:
    """Return a message if ``obj`` nests deeper than MAX_JSON_DEPTH or holds a lone surrogate."""
    stack: list[tuple[Any, int, str]] = [(obj, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, dict):
            if deep and depth > MAX_JSON_DEPTH:
                return f"JSON nested more than {MAX_JSON_DEPTH} levels deep (at {_short(where) or 'top'})"
            for k, v in node.items():
                if surrogates and _SURROGATE.search(k):
                    return f"lone UTF-16 surrogate {_surrogate(k)} in key {_short(where + '.' + _safe(k))}"
                stack.append((v, depth + 1, f"{where}.{_safe(k)}"))
        elif isinstance(node, list):
            if deep and depth > MAX_JSON_DEPTH:
                return f"JSON nested more than {MAX_JSON_DEPTH} levels deep (at {_short(where) or 'top'})"
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(node))
        elif surrogates and isinstance(node, str) and _SURROGATE.search(node):
            return (f"lone UTF-16 surrogate {_surrogate(node)} in {_short(where) or 'top'} (an escape such "
                    "as \\ud83d without its pair; not encodable as UTF-8)")
    return None


def _surrogate(s: str) -> str:
    return "\\u%04x" % ord(_SURROGATE.search(s).group(0))


def _safe(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")[:60]


def _record_id(obj: Any) -> str | None:
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, str) else None


def parse_json_line(raw: bytes, path: str | os.PathLike, line: int, *, at_eof: bool = False) -> Any:
    """Parse one non-blank JSON Lines line (bytes, newline included or not) under every rule of
    this module and return its value."""
    path = Path(path)
    text = _decode(raw, path, line, at_eof=at_eof)
    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, _json_error_hint(exc, text, at_eof=at_eof), line=line,
                        record=_guess_id(raw)) from None
    except RecursionError:
        raise DataError(path, f"JSON nested too deeply to parse (limit {MAX_JSON_DEPTH} levels)",
                        line=line, record=_guess_id(raw)) from None
    except ValueError as exc:  # NaN/Infinity, duplicate keys, integers over 4300 digits
        raise DataError(path, str(exc), line=line, record=_guess_id(raw)) from None
    deep = raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    if deep or surrogates:
        problem = _walk_check(obj, deep, surrogates)
        if problem:
            raise DataError(path, problem, line=line, record=_record_id(obj))
    return obj


def read_json(path: str | os.PathLike) -> Any:
    """Read one JSON document (UTF-8; a leading UTF-8 byte order mark is dropped); every error
    names the file and, where it has one, the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected a JSON file") from None
    skip = _check_head(path, raw[:64])
    raw = raw[skip:]
    text = _decode(raw, path, None, at_eof=True, offset=skip)
    if not text.strip():
        raise DataError(path, "file is empty")
    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, _json_error_hint(exc, text, jsonl=False), line=exc.lineno) from None
    except RecursionError:
        raise DataError(path, f"JSON nested too deeply to parse (limit {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:
        raise DataError(path, str(exc)) from None
    m = _SURROGATE_ESCAPE.search(raw)
    problem = _walk_check(obj, True, m is not None)
    if problem:
        line = raw.count(b"\n", 0, m.start()) + 1 if m is not None and "surrogate" in problem else None
        raise DataError(path, problem, line=line, record=_top_record(obj, problem))
    return obj


def _top_record(obj: Any, problem: str) -> str | None:
    """Id of the top-level element a problem sits in (array of records, or object keyed by id)."""
    m = re.search(r" (?:in|at) (?:key )?(\[(\d+)\]|\.([^.\[ ]+))", problem)
    if not m:
        return None
    if m.group(2) is not None and isinstance(obj, list) and int(m.group(2)) < len(obj):
        return _record_id(obj[int(m.group(2))])
    if m.group(3) is not None and isinstance(obj, dict):
        return m.group(3)
    return None


def iter_jsonl(path: str | os.PathLike, max_line_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for every non-blank line; errors name file, line and record.

    Lines are parsed one by one (never through ``datasets`` schema inference, which turns a
    missing ``loss`` key into ``None``), split on ``\\n`` only (``\\r\\n`` endings are fine), and
    checked by :func:`parse_json_line`: strict UTF-8, no NaN/Infinity, no duplicate keys, no lone
    surrogates, at most :data:`MAX_JSON_DEPTH` levels and :data:`MAX_LINE_BYTES` bytes a line.
    """
    path = Path(path)
    limit = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a JSON Lines file")
    seen = False
    with open(path, "rb") as fh:
        fh.seek(_check_head(path, fh.read(64)))
        lineno = 0
        while True:
            raw = fh.readline(limit + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise DataError(path, f"line longer than {limit} bytes (agentflan.io.MAX_LINE_BYTES); "
                                      "a JSON array or a binary file under a .jsonl name?",
                                line=lineno, record=_guess_id(raw[:4096]))
            if not raw.strip():
                continue
            obj = parse_json_line(raw, path, lineno, at_eof=not raw.endswith(b"\n"))
            seen = True
            yield lineno, obj
    if not seen:
        raise DataError(path, "file is empty (no JSON lines)")


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """A JSON Lines file's bytes (``data`` of :func:`read_jsonl_lines`), with its errors for a
    missing file or a directory."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a JSON Lines file")
    return path.read_bytes()


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Every non-blank line's value, as :func:`iter_jsonl` gives them (same values, same errors);
    read whole, and fast for lines already in canonical form (module docstring)."""
    return read_jsonl_lines(path, _lines=False)[0]


def read_jsonl_lines(path: str | os.PathLike, max_line_bytes: int | None = None, _lines: bool = True,
                     data: bytes | None = None) -> tuple[list[Any], list[bytes | None]]:
    """:func:`read_jsonl`, and for every value the bytes of its line (newline excluded) where
    they are exactly ``dumps_bytes(value)`` (the line can be written again as it is), else None.

    A line is taken as read without the strict checks only if it is exactly ``orjson``'s
    serialisation of what ``orjson`` parsed from it: then it is valid UTF-8 JSON without NaN,
    duplicate keys (the serialisation would be shorter), lone surrogates or integers over 64
    bits, and ``json`` reads the same value from it; its nesting depth is still checked.
    Every other line goes through :func:`parse_json_line`. Errors are those of
    :func:`iter_jsonl`, for the same line. ``data``: the file's bytes, if the caller read them."""
    path = Path(path)
    limit = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    if data is None:
        if not path.exists():
            raise DataError(path, "file not found")
        if path.is_dir():
            raise DataError(path, "is a directory, expected a JSON Lines file")
        data = path.read_bytes()
    data = data[_check_head(path, data[:64]):]
    lines = data.split(b"\n")
    last_torn = lines[-1] != b""    # the last line has no newline (b"" after a final newline)
    if not last_torn:
        lines.pop()
    objs: list[Any] = []
    raws: list[bytes | None] = []
    fast = _orjson is not None
    loads, dumps_ = (_orjson.loads, _orjson.dumps) if fast else (None, None)
    sort = _orjson.OPT_SORT_KEYS if fast else 0
    n = len(lines)
    for lineno, raw in enumerate(lines, start=1):
        if len(raw) > limit:
            raise DataError(path, f"line longer than {limit} bytes (agentflan.io.MAX_LINE_BYTES); "
                                  "a JSON array or a binary file under a .jsonl name?",
                            line=lineno, record=_guess_id(raw[:min(limit + 1, 4096)]))
        if fast:
            try:
                obj = loads(raw)
            except ValueError:
                pass
            else:
                canonical = dumps_(obj, option=sort) == raw
                if (canonical or dumps_(obj) == raw) and (
                        raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH
                        or _walk_check(obj, True, False) is None):
                    objs.append(obj)
                    raws.append(raw if _lines and canonical and _plain(obj) else None)
                    continue
        if not raw.strip():
            continue
        at_eof = lineno == n and last_torn
        objs.append(parse_json_line(raw if at_eof else raw + b"\n", path, lineno, at_eof=at_eof))
        raws.append(None)
    if not objs:
        raise DataError(path, "file is empty (no JSON lines)")
    return objs, raws


class AppendLog:
    """A file that only grows by whole lines: opened lazily in append mode, each append one
    ``os.write`` loop of whole lines followed by ``fsync``, so a kill leaves at most a torn last
    line (the readers of such files drop it). Used for the resume side files of long jobs."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def _append_text(self, text: str) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def _complete_lines(self, what: str, fix_hint: str) -> Iterator[tuple[int, Any]]:
        """``(1-based line, JSON value)`` of every complete non-blank line; counts them in
        ``self.lines`` and a torn last line (no newline: the writer was killed) in ``self.torn``.
        Any other unreadable line is a :class:`DataError` naming the file and line."""
        parts = self.path.read_bytes().split(b"\n")
        if parts.pop():  # after the last newline: b"" unless the last line is torn
            self.torn = 1
        for lineno, raw in enumerate(parts, start=1):
            if not raw.strip():
                continue
            self.lines += 1
            try:
                yield lineno, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(self.path, f"unreadable {what} line ({exc}); {fix_hint}", line=lineno) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of ``obj`` (cache keys, run names)."""
    return hashlib.sha256(dumps(obj).encode("utf-8")).hexdigest()[:length]
