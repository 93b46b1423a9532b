"""An outage warning is logged once per interval, not once per failing request."""

from __future__ import annotations

import logging

from config.logs import OutageWarning


def test_one_warning_per_interval(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    warn = OutageWarning(logging.getLogger("tests.outage"), "Redis cannot be reached: %s", every=60)
    with caplog.at_level(logging.WARNING, logger="tests.outage"):
        warn(ConnectionError("refused"))
        clock[0] += 59
        warn(ConnectionError("refused again"))
        clock[0] += 1
        warn(ConnectionError("still refused"))
    assert [r.getMessage() for r in caplog.records] == [
        "Redis cannot be reached: refused",
        "Redis cannot be reached: still refused",
    ]
