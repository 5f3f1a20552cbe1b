"""Logging for scripts: -v/-q and --log-file LEVEL:PATH.

The console gets INFO and above by default; each -v shows one level more
(DEBUG), each -q one less (WARNING, ERROR, CRITICAL).  Each --log-file
writes records of LEVEL and above (DEBUG when only a path is given) to
PATH, whatever -v and -q say.  The handlers go on the root logger, so the
library's own messages (reconnections, outages) appear too.  Debugging
that comes by the line per event (each begin, commit and abort of the
``transaction`` package, each reconnection attempt during an outage, each
ZCML file read) shows only from -vv on.
"""

from __future__ import annotations

import logging
import optparse
import sys
from typing import Any, Dict, List, Optional, Tuple

from zope.interface import implementer

from canonical.launchpad.scripts.interfaces import ILogSetup

__all__ = ['logger_options', 'log_level', 'parse_log_file', 'LogSetup',
           'logger', 'CONSOLE_FORMAT', 'FILE_FORMAT']

# Loggers too chatty at DEBUG for one -v.
_NOISY = ('txn', 'config', 'canonical.database.reconnect')

_LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
           logging.CRITICAL]

CONSOLE_FORMAT = '%(asctime)s %(levelname)-7s %(message)s'
FILE_FORMAT = '%(asctime)s %(process)d %(levelname)-7s [%(name)s] ' \
    '%(message)s'


def logger_options(parser: optparse.OptionParser,
                   default: int = logging.INFO) -> None:
    """Add -v, -q and --log-file to ``parser``."""
    parser.set_defaults(verbose=0, quiet=0, log_files=[],
                        default_log_level=default)
    parser.add_option('-v', '--verbose', action='count', dest='verbose',
                      help='Show more messages; repeat for more still.')
    parser.add_option('-q', '--quiet', action='count', dest='quiet',
                      help='Show fewer messages; repeat for fewer still.')
    parser.add_option('--log-file', action='append', dest='log_files',
                      metavar='LEVEL:PATH',
                      help='Also log records of LEVEL (DEBUG, INFO, WARNING, '
                      'ERROR) and above to PATH.  May be repeated.')


def log_level(options: Any) -> int:
    """The console level the options ask for."""
    index = _LEVELS.index(getattr(options, 'default_log_level',
                                  logging.INFO))
    index += (options.quiet or 0) - (options.verbose or 0)
    return _LEVELS[max(0, min(len(_LEVELS) - 1, index))]


def parse_log_file(value: str) -> Tuple[int, str]:
    """(level, path) of a --log-file value; ValueError when malformed."""
    level_name, sep, path = value.partition(':')
    if not sep or '/' in level_name:
        return logging.DEBUG, value
    level = logging.getLevelName(level_name.strip().upper())
    if not isinstance(level, int):
        raise ValueError('--log-file %s: unknown level %r; use DEBUG, INFO, '
                         'WARNING or ERROR.' % (value, level_name))
    if not path:
        raise ValueError('--log-file %s: no path after the level.' % value)
    return level, path


@implementer(ILogSetup)
class LogSetup:
    """See ILogSetup."""

    def __init__(self, options: Any, stream: Any = None) -> None:
        self.console_level = log_level(options)
        self.files = [parse_log_file(v) for v in options.log_files or []]
        self.stream = stream
        self.quiet_noisy = (options.verbose or 0) < 2
        self._handlers: List[logging.Handler] = []
        self._old_levels: Dict[str, int] = {}

    def install(self) -> None:
        console = logging.StreamHandler(self.stream or sys.stderr)
        console.setLevel(self.console_level)
        console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        self._handlers = [console]
        for level, path in self.files:
            handler = logging.FileHandler(path, encoding='utf-8')
            handler.setLevel(level)
            handler.setFormatter(logging.Formatter(FILE_FORMAT))
            self._handlers.append(handler)
        levels = {'': min(h.level for h in self._handlers)}
        if self.quiet_noisy:
            levels.update((name, logging.INFO) for name in _NOISY)
        for name, level in levels.items():
            self._old_levels[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(level)
        root = logging.getLogger()
        for handler in self._handlers:
            root.addHandler(handler)

    def uninstall(self) -> None:
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()
        self._handlers = []
        for name, level in self._old_levels.items():
            logging.getLogger(name).setLevel(level)
        self._old_levels = {}


def logger(options: Any, name: Optional[str] = None) -> logging.Logger:
    """Set logging up as ``options`` say and return the logger ``name``
    (for scripts that parse their own options)."""
    LogSetup(options).install()
    return logging.getLogger(name)
