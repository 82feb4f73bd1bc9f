"""The building blocks of the section models: the strict base model, durations and sizes.

Contract: a duration in pgferry.toml is text (``250ms``, ``5s``, ``2min``, ``1h``) or a bare
number of milliseconds, as in PostgreSQL's settings; :func:`parse_duration` reads it,
:class:`Duration` keeps the text it was written as, and a :data:`DurationField` parses it
once when the config loads. A size is ``10MB``, ``512kB``, ``1GiB`` or a bare number of bytes
(:func:`parse_size`); a PostgreSQL memory setting (binary units) by
:func:`pg_kilobytes`. Every section model derives from ``_Model``: an unknown key is an
error, and a field may be given by its alias.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|sec|min|m|h|d)?\s*$")
_UNIT_SECONDS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    None: 1e-3,  # a bare number is milliseconds, as in PostgreSQL's settings
}


def parse_duration(value: str | int | float) -> timedelta:
    """Parse ``250ms``, ``5s``, ``2min``, ``1h``; a bare number is milliseconds (as PostgreSQL)."""
    if isinstance(value, int | float):
        return timedelta(milliseconds=value)
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration (examples: 250ms, 5s, 2min, 1h)")
    return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def pg_duration(value: str | int | float | timedelta) -> str:
    """A duration as a PostgreSQL setting value in milliseconds (``'250ms'``)."""
    td = value if isinstance(value, timedelta) else parse_duration(value)
    return f"{int(td.total_seconds() * 1000)}ms"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Duration(timedelta):
    """A duration of the config, parsed once when it loads: a :class:`~datetime.timedelta`
    that keeps the text it was written as (``250ms``, ``5min``), which is what ``str()``
    and every message show, and what ``model_dump`` writes back."""

    text: str

    def __new__(cls, value: str | int | float | timedelta) -> Duration:
        if isinstance(value, Duration):
            return value
        td = value if isinstance(value, timedelta) else parse_duration(value)
        self = super().__new__(cls, seconds=td.total_seconds())
        self.text = f"{td.total_seconds():g}s" if isinstance(value, timedelta) else str(value)
        return self

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __reduce__(self) -> tuple[type[Duration], tuple[str]]:
        return (Duration, (self.text,))


def _duration(value: Any) -> Duration:
    if not isinstance(value, str | int | float | timedelta) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (examples: 250ms, 5s, 2min, 1h)")
    return Duration(value)


#: a duration field: written as text (or a bare number of milliseconds) in pgferry.toml
DurationField = Annotated[
    Duration, PlainValidator(_duration), PlainSerializer(str, return_type=str)
]


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "kB": 10**3,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size(value: str | int) -> int:
    """``10MB``, ``512kB``, ``1GiB`` or a bare number of bytes, as bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size (examples: 0, 512kB, 10MB, 1GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


#: a memory setting as PostgreSQL writes it: its units are binary (1MB = 1024kB), unlike
#: :func:`parse_size`
_PG_SIZE = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)\s*$")


def pg_kilobytes(value: str) -> int:
    """A memory setting in PostgreSQL's units (``64MB``), in kB, between 1MB and 2TB."""
    m = _PG_SIZE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory size in PostgreSQL's units (e.g. 256MB, 1GB)")
    kb = int(m.group(1)) * {"kB": 1, "MB": 1 << 10, "GB": 1 << 20, "TB": 1 << 30}[m.group(2)]
    if not 1024 <= kb <= 2**31 - 1:
        raise ValueError(f"{value!r} is not between 1MB and 2TB (PostgreSQL's limits)")
    return kb
