"""A readable console: per-parameter and dump records stay in the log file only.

mmengine logs at INFO, to the console and the run's log file alike, a line per parameter
from its optimizer constructor (``paramwise_options -- <name>:lr=...``), the whole system
environment, the whole config, the hook order, and (without a log file) a block per
parameter from ``init_weights`` ("... value is the same before and after calling
`init_weights`"), the experiment name after every epoch, and mmseg logs a table row
per class after each validation. :func:`quiet_console` filters those records from the console handler
only; the log file keeps everything. ``VLLAMA_MM_VERBOSE=1`` turns the filter off.
"""
import logging
import os
import re
from typing import Optional

# message prefixes (after lstrip of newlines/dashes) of the records kept off the console
_NOISE = (
    re.compile(r'paramwise_options -- '),            # optimizer constructor, per parameter
    re.compile(r'System environment:'),              # Runner._log_env
    re.compile(r'Config:\n'),                        # Runner: the full config
    re.compile(r'Hooks will be executed in the following order'),
    re.compile(r'\S+ - torch\.Size\(\['),            # init_weights dump, per parameter
    re.compile(r'per class results:'),               # mmseg IoUMetric: a row per class
    re.compile(r'\+[-+]+\+\n\|\s+Class\s+\|'),        # ... and its table (150 for ADE20K)
    re.compile(r'Exp name: '),                       # LoggerHook: after every epoch
)
# warnings mmengine 0.10.7 raises about its own internals (nothing a user can act on)
_INTERNAL_WARNINGS = (
    re.compile(r'"FileClient" will be deprecated in future'),
    re.compile(r'"HardDiskBackend" is the alias of "LocalBackend"'),
)


class ConsoleNoiseFilter(logging.Filter):
    """Drops INFO-and-below records matching :data:`_NOISE` and mmengine's warnings about its
    own deprecated internals; every other warning and error passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage().lstrip('\n-')
        if record.levelno >= logging.WARNING:
            return record.levelno > logging.WARNING or \
                not any(p.match(msg) for p in _INTERNAL_WARNINGS)
        return not any(p.match(msg) for p in _NOISE)


def is_console_handler(handler: logging.Handler) -> bool:
    """A plain stream handler (MMLogger's console one; ``FileHandler`` is a subclass and is
    excluded)."""
    return type(handler) is logging.StreamHandler


def quiet_console(logger: Optional[logging.Logger] = None) -> None:
    """Install :class:`ConsoleNoiseFilter` on ``logger``'s console handlers (default: the
    current MMLogger). Idempotent; a no-op with ``VLLAMA_MM_VERBOSE=1``."""
    if os.environ.get('VLLAMA_MM_VERBOSE', '0') not in ('', '0'):
        return
    if logger is None:
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
    for handler in logger.handlers:
        if is_console_handler(handler) and \
                not any(isinstance(f, ConsoleNoiseFilter) for f in handler.filters):
            handler.addFilter(ConsoleNoiseFilter())


def log_file(logger: logging.Logger) -> Optional[str]:
    """Path of the logger's log file, if it has one."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None
