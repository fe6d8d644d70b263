"""Logging set-up: text or JSON lines on stderr (and optionally a file), every line redacted."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from ionqbo.http import RedactingFilter, redact

LOGGER_NAME = "ionqbo"

# Context a caller may attach with ``log.warning(..., extra={...})``; they become JSON keys (and
# ``key=value`` pairs on text lines). Names are part of the log contract: people alert on them.
EXTRA_FIELDS: tuple[str, ...] = ("ion_id", "qbo_id", "kind", "error_code", "intuit_tid")

LogFormat = Literal["text", "json"]

# Marks the handlers this module installs, so a second set-up replaces them instead of adding more.
_MARK = "_ionqbo_handler"


def _utc(record: logging.LogRecord) -> datetime:
    return datetime.fromtimestamp(record.created, tz=UTC)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in EXTRA_FIELDS:
        value = record.__dict__.get(name)
        if value is not None and value != "":
            found[name] = value
    return found


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info and record.exc_info[0] is not None:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


class TextFormatter(logging.Formatter):
    """``2026-11-25T18:41:58Z WARNING message key=value ...``, then any traceback; redacted."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a text line (a traceback follows on the next lines)."""
        line = f"{_utc(record).strftime('%Y-%m-%dT%H:%M:%SZ')} {record.levelname} {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        exc = _exception_text(self, record)
        if exc:
            line += "\n" + exc
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``event``, ``logger``, the extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a JSON object on a single line.

        Each value is redacted before it is encoded, so a secret is caught even when JSON escaping
        would have changed its spelling (quotes, backslashes, non-ASCII).
        """
        obj: dict[str, Any] = {
            "time": _utc(record).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "event": record.getMessage(),
            "logger": record.name,
        }
        for key, value in _extras(record).items():
            obj[key] = value if isinstance(value, bool | int | float) else str(value)
        exc = _exception_text(self, record)
        if exc:
            obj["exc"] = exc
        clean = {key: redact(value) if isinstance(value, str) else value for key, value in obj.items()}
        return json.dumps(clean, ensure_ascii=False, default=str)


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``fmt`` ("text" or "json").

    Raises:
        ValueError: for any other format name.
    """
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    msg = f"log format must be 'text' or 'json', not {fmt!r}"
    raise ValueError(msg)


def setup_logging(
    *,
    level: int,
    fmt: LogFormat | str = "text",
    log_file: Path | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure the ``ionqbo`` logger: one handler on ``stream`` and, if given, one on ``log_file``.

    Logs are diagnostics, so they go to stderr, never stdout (stdout carries the data). Every
    handler carries :class:`~ionqbo.http.RedactingFilter` and its formatter redacts the finished
    line, so records from any ``ionqbo.*`` logger, tracebacks included, never show a registered
    secret. Calling this again replaces the handlers it installed before (no duplicate lines).

    Args:
        level: the logging level (``logging.INFO``, ...).
        fmt: ``"text"`` or ``"json"`` (one JSON object a line).
        log_file: also append the same lines to this file (its directory is created).
        stream: where lines go; the current ``sys.stderr`` when None (resolved at call time, so a
            test runner that swaps stderr gets the lines).

    Raises:
        ValueError: for an unknown ``fmt``.
        OSError: when ``log_file`` cannot be opened.
    """
    formatter = make_formatter(fmt)
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
            handler.close()

    handlers: list[logging.Handler] = [logging.StreamHandler(stream if stream is not None else sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        setattr(handler, _MARK, True)
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        logger.addHandler(handler)
    logger.setLevel(level)


def level_for(*, verbose: int = 0, quiet: bool = False) -> int:
    """The level for ``-v`` counts and ``--quiet``: WARNING quiet, INFO by default, DEBUG with -v."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


def format_exception_text(exc: BaseException) -> str:
    """A redacted one-line ``Type: message`` for an exception (for ``extra`` or plain messages)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return redact(" ".join(text.split()))
