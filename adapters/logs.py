"""structlog configuration: JSON lines on stderr, one logger config for all.

``configure`` uses structlog's cached, filtering bound logger so a call below
the configured level costs almost nothing, and caches loggers on first use
(``cache_logger_on_first_use``).  Context that belongs to a message (session,
sequence number, ExecID) is bound with ``log.bind(...)`` where the message is
handled, never formatted eagerly: per-message logging on the hot path costs
about as much as processing the message (reference doc, section 11), so the
hot paths log only exceptions and summaries.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


def configure(level: str | None = None, stream: TextIO | None = None, json: bool = True) -> None:
    level_name = (level or os.environ.get("STP_LOG_LEVEL") or "info").lower()
    if level_name not in _LEVELS:
        raise ValueError(f"unknown log level {level_name!r}; use one of {sorted(_LEVELS)}")
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level_name]),
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
