"""kopf's per-object timer successes are DEBUG, everything else keeps its level."""

from __future__ import annotations

import logging

import pytest

from fms_operator.logs import KOPF_OBJECT_LOGGER, QuietTimerSuccess


@pytest.fixture
def kopf_objects():
    logger = logging.getLogger(KOPF_OBJECT_LOGGER)
    quiet = QuietTimerSuccess(logger)
    logger.addFilter(quiet)
    level = logger.level
    yield logger
    logger.removeFilter(quiet)
    logger.setLevel(level)


def _lines(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == KOPF_OBJECT_LOGGER]


def test_timer_success_is_not_logged_at_info(kopf_objects, caplog):
    kopf_objects.setLevel(logging.INFO)
    with caplog.at_level(logging.INFO, logger=KOPF_OBJECT_LOGGER):
        kopf_objects.info("Timer 'autoscale' succeeded.")
        kopf_objects.info("Handler 'fms_changed' succeeded.")
        kopf_objects.error("Timer 'autoscale' failed with an exception and will try again in 60 seconds: boom")
    assert _lines(caplog) == [("INFO", "Handler 'fms_changed' succeeded."),
                              ("ERROR", "Timer 'autoscale' failed with an exception and will try again in 60 seconds: boom")]


def test_timer_success_is_kept_as_debug_when_verbose(kopf_objects, caplog):
    kopf_objects.setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger=KOPF_OBJECT_LOGGER):
        # kopf logs through a LoggerAdapter per object; the filter sits on the logger beneath it.
        logging.LoggerAdapter(kopf_objects, {"k8s_skip": True}).info("Timer 'autoscale' succeeded.")
    assert _lines(caplog) == [("DEBUG", "Timer 'autoscale' succeeded.")]
