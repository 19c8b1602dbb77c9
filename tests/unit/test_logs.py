"""The service's log configuration (logs.configure), as `serve` sets it: structlog's own
defaults, with `rich` installed, print every frame's local variables with a traceback."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from glowing_fiesta.logs import configure

SECRET = "gf_abcdEFGH_this-is-a-secret-token"  # noqa: S105 - a fake key, to be hidden


def _fail_holding_a_secret() -> None:
    token = SECRET
    raise ValueError("no key matches " + token[:11])


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_exception_has_its_traceback_but_no_local_variables(fmt: str) -> None:
    # `configure` binds the stream it finds (not pytest's capsys, which closes after
    # the test): a stream of our own, then the session's configuration again.
    out, session_stderr = io.StringIO(), sys.stderr
    sys.stderr = out
    try:
        configure("INFO", fmt)
        try:
            _fail_holding_a_secret()
        except ValueError:
            structlog.get_logger(f"test_logs.{fmt}").exception("lookup_failed", path="/api")
    finally:
        sys.stderr = session_stderr
        configure("INFO", "console")  # as conftest.py sets it for every test
    err = out.getvalue()
    assert "lookup_failed" in err
    assert "Traceback (most recent call last)" in err
    assert "ValueError: no key matches gf_abcdEFGH" in err
    assert SECRET not in err
    if fmt == "json":
        line = json.loads(err.strip().splitlines()[-1])
        assert (line["event"], line["level"]) == ("lookup_failed", "error")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_standard_library_log_with_an_exception_prints_its_traceback(fmt: str) -> None:
    """uvicorn logs through the standard library: its exceptions read as structlog's do
    (before, the renderers printed the exc_info tuple's three reprs)."""
    out, session_stderr = io.StringIO(), sys.stderr
    sys.stderr = out
    try:
        configure("INFO", fmt)
        try:
            _fail_holding_a_secret()
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    finally:
        sys.stderr = session_stderr
        configure("INFO", "console")
    err = out.getvalue()
    assert "Traceback (most recent call last)" in err
    assert "ValueError: no key matches gf_abcdEFGH" in err
    assert "<traceback object" not in err
    if fmt == "json":
        line = json.loads(err.strip().splitlines()[-1])
        assert (line["event"], line["level"]) == ("Exception in ASGI application", "error")
