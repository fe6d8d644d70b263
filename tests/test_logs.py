"""Tests for ionqbo.logs: text and JSON lines, extras, redaction, idempotent set-up."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets

import pytest

from ionqbo.http import redact
from ionqbo.logs import EXTRA_FIELDS, LOGGER_NAME, format_exception_text, level_for, setup_logging

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR|CRITICAL) .+$")


@pytest.fixture(autouse=True)
def _restore_logger():
    logger = logging.getLogger(LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


def _secret() -> str:
    value = "sk_" + secrets.token_hex(12)
    redact.add(value)
    return value


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_text_line_format():
    out = io.StringIO()
    setup_logging(level=logging.INFO, fmt="text", log_file=None, stream=out)
    log = logging.getLogger("ionqbo.sync")
    log.warning("PO %s parked", "1042", extra={"kind": "purchase_order", "ion_id": "1042"})
    log.debug("not shown at INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert TEXT_LINE.match(lines[0]), lines[0]
    assert lines[0].split(" ", 2)[1:] == ["WARNING", "PO 1042 parked ion_id=1042 kind=purchase_order"]


def test_json_lines_have_the_contract_keys():
    out = io.StringIO()
    setup_logging(level=logging.DEBUG, fmt="json", log_file=None, stream=out)
    log = logging.getLogger("ionqbo.qbo.client")
    extra = {"ion_id": "1042", "qbo_id": "257", "kind": "purchase_order", "error_code": "6140",
             "intuit_tid": "1-abc-2"}
    log.error("QBO refused PO %s", "1042", extra=extra)
    log.info("plain line")
    first, second = _json_lines(out.getvalue())
    assert first["event"] == "QBO refused PO 1042"
    assert first["level"] == "ERROR"
    assert first["logger"] == "ionqbo.qbo.client"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    for key in EXTRA_FIELDS:
        assert first[key] == extra[key]
    assert "exc" not in first
    assert set(second) == {"time", "level", "event", "logger"}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secret_never_appears_even_in_exceptions(fmt, tmp_path):
    secret = _secret()
    out = io.StringIO()
    log_file = tmp_path / "sub" / "ionqbo.log"
    setup_logging(level=logging.INFO, fmt=fmt, log_file=log_file, stream=out)
    log = logging.getLogger("ionqbo.qbo.auth")
    log.warning("token refresh with %s", secret, extra={"intuit_tid": secret})
    log.info("Authorization: Bearer abcdefghijklmnop1234 sent")
    try:
        raise RuntimeError(f"token endpoint said no to {secret}")
    except RuntimeError:
        log.exception("refresh failed")
    for text in (out.getvalue(), log_file.read_text(encoding="utf-8")):
        assert secret not in text
        assert "abcdefghijklmnop1234" not in text
        assert "***" in text
        assert "RuntimeError" in text  # the traceback is kept, only the secret is gone
    if fmt == "json":
        lines = _json_lines(out.getvalue())
        assert len(lines) == 3
        assert "Traceback" in lines[2]["exc"]
        assert lines[0]["intuit_tid"] == "***"


def test_secret_with_json_special_characters_is_redacted():
    secret = 'p"w\\d' + secrets.token_hex(6)
    redact.add(secret)
    out = io.StringIO()
    setup_logging(level=logging.INFO, fmt="json", log_file=None, stream=out)
    logging.getLogger("ionqbo").warning("value %s", secret)
    (line,) = _json_lines(out.getvalue())
    assert line["event"] == "value ***"


def test_setup_twice_does_not_duplicate_lines(tmp_path):
    first, second = io.StringIO(), io.StringIO()
    setup_logging(level=logging.INFO, fmt="text", log_file=tmp_path / "a.log", stream=first)
    setup_logging(level=logging.INFO, fmt="json", log_file=tmp_path / "a.log", stream=second)
    logging.getLogger("ionqbo.state").info("once")
    assert first.getvalue() == ""
    assert len(_json_lines(second.getvalue())) == 1
    assert len((tmp_path / "a.log").read_text().splitlines()) == 1
    ours = [h for h in logging.getLogger(LOGGER_NAME).handlers if getattr(h, "_ionqbo_handler", False)]
    assert len(ours) == 2


def test_default_stream_is_stderr_at_call_time(capsys):
    setup_logging(level=logging.INFO, fmt="text", log_file=None)
    logging.getLogger("ionqbo").info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "INFO to stderr" in captured.err


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="text"):
        setup_logging(level=logging.INFO, fmt="xml", log_file=None, stream=io.StringIO())


@pytest.mark.parametrize(("verbose", "quiet", "level"), [
    pytest.param(0, False, logging.INFO, id="default"),
    pytest.param(1, False, logging.DEBUG, id="verbose"),
    pytest.param(2, True, logging.WARNING, id="quiet-wins"),
])
def test_level_for(verbose, quiet, level):
    assert level_for(verbose=verbose, quiet=quiet) == level


def test_format_exception_text_redacts():
    secret = _secret()
    text = format_exception_text(ValueError(f"bad {secret}\nsecond line"))
    assert text == "ValueError: bad *** second line"
