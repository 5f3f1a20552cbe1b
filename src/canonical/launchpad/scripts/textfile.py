"""A cron script's last run for Prometheus, as node_exporter's textfile
collector reads it: ``<directory>/<script name>.prom``.

The file is replaced atomically (written to a temporary file in the same
directory, then renamed over the old one), so the collector never reads
half a file.  The time of the last success survives failed runs: it is
read back from the file the run replaces.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import List, Optional

__all__ = ['METRICS_DIR_ENV', 'metrics_path', 'last_success', 'write_run']

METRICS_DIR_ENV = 'ZOPELESS_METRICS_DIR'

_SUCCESS = 'zopeless_cron_last_success_timestamp_seconds'
_SUCCESS_LINE = re.compile(r'^%s\{[^}]*\} (\S+)$' % _SUCCESS, re.M)


def metrics_path(directory: str, name: str) -> str:
    """The file of script ``name`` in the collector's ``directory``."""
    return os.path.join(directory, '%s.prom' % name)


def last_success(path: str) -> Optional[float]:
    """When the last successful run written to ``path`` ended (Unix time),
    or None."""
    try:
        with open(path, encoding='utf-8') as f:
            match = _SUCCESS_LINE.search(f.read())
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def _escape(value: str) -> str:
    return value.replace('\\', '\\\\').replace('"', '\\"').replace(
        '\n', '\\n')


def _render(name: str, status: int, seconds: float, items: Optional[int],
            ended: float, succeeded: Optional[float]) -> str:
    label = '{script="%s"}' % _escape(name)
    figures = [
        ('zopeless_cron_last_run_duration_seconds',
         'How long the last run took.', seconds),
        ('zopeless_cron_last_run_exit_status',
         'Exit status of the last run (0: success).', status),
        ('zopeless_cron_last_run_timestamp_seconds',
         'When the last run ended (Unix time).', ended),
    ]
    if items is not None:
        figures.append(('zopeless_cron_last_run_items',
                        'Items the last run processed.', items))
    if succeeded is not None:
        figures.append((_SUCCESS, 'When the last successful run ended '
                        '(Unix time).', succeeded))
    lines: List[str] = []
    for metric, text, value in figures:
        lines += ['# HELP %s %s' % (metric, text),
                  '# TYPE %s gauge' % metric,
                  '%s%s %s' % (metric, label, repr(float(value)))]
    return '\n'.join(lines) + '\n'


def write_run(path: str, name: str, status: int, seconds: float,
              items: Optional[int] = None,
              ended: Optional[float] = None) -> None:
    """Replace ``path`` with the figures of script ``name``'s run that just
    ended with exit ``status`` after ``seconds``; OSError when it cannot."""
    ended = time.time() if ended is None else ended
    succeeded = ended if status == 0 else last_success(path)
    text = _render(name, status, seconds, items, ended, succeeded)
    directory = os.path.dirname(path) or '.'
    fd, temporary = tempfile.mkstemp(dir=directory, suffix='.tmp',
                                     prefix='.%s.' % os.path.basename(path))
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.chmod(temporary, 0o644)  # the collector runs as another user
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
