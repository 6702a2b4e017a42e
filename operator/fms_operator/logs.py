"""Logging set-up of the operator process: readable at hundreds of fms objects.

kopf logs "Timer 'autoscale' succeeded." at INFO for every object on every
interval (500 objects at 15 s is 2000 lines a minute) and has no per-handler
log level. A filter on kopf's per-object logger demotes exactly those lines to
DEBUG; failures and everything else keep their level.
"""

from __future__ import annotations

import logging
import re

KOPF_OBJECT_LOGGER = "kopf.objects"
_TIMER_SUCCESS = re.compile(r"^Timer '[^']*' succeeded\.$")


class QuietTimerSuccess(logging.Filter):
    """Turns kopf's INFO "Timer '<id>' succeeded." into a DEBUG record (dropped unless the logger logs DEBUG)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _TIMER_SUCCESS.match(record.getMessage()):
            return True
        # The logger's level check has already passed for INFO; redo it for DEBUG.
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return self.logger.isEnabledFor(logging.DEBUG)


def configure(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kopf_objects = logging.getLogger(KOPF_OBJECT_LOGGER)
    if not any(isinstance(f, QuietTimerSuccess) for f in kopf_objects.filters):
        kopf_objects.addFilter(QuietTimerSuccess(kopf_objects))
