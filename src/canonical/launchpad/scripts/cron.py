"""LaunchpadCronScript: a script with a switch that turns it off.

The switch lives in an INI file, one section per script name, with
``[DEFAULT]`` for every script::

    [DEFAULT]
    enabled = true

    [karma-demo]
    enabled = false

The file is ``cron_control_file`` of the script class, else
$ZOPELESS_CRON_CONTROL, else /etc/zopeless/cronscripts.ini.  A missing
file enables every script.  A file that cannot be read or understood stops
the script with CronControlError: it was probably being edited to turn
something off.

With ``--metrics-dir DIR`` (or $ZOPELESS_METRICS_DIR) every run that was
not switched off writes its duration, exit status, items processed and
the time of the last success to ``DIR/<name>.prom``, for node_exporter's
textfile collector (see textfile.py).
"""

from __future__ import annotations

import configparser
import logging
import os
from typing import Optional

from zope.interface import implementer

from canonical.launchpad.scripts.base import LaunchpadScript
from canonical.launchpad.scripts.interfaces import CronControlError
from canonical.launchpad.scripts.interfaces import ILaunchpadCronScript
from canonical.launchpad.scripts.textfile import METRICS_DIR_ENV
from canonical.launchpad.scripts.textfile import metrics_path
from canonical.launchpad.scripts.textfile import write_run

__all__ = ['LaunchpadCronScript', 'cronscript_enabled', 'cron_control_path',
           'CRON_CONTROL_ENV', 'DEFAULT_CRON_CONTROL']

CRON_CONTROL_ENV = 'ZOPELESS_CRON_CONTROL'
DEFAULT_CRON_CONTROL = '/etc/zopeless/cronscripts.ini'


def cron_control_path(configured: Optional[str] = None) -> str:
    """The control file: ``configured``, $ZOPELESS_CRON_CONTROL or the
    default."""
    return configured or os.environ.get(CRON_CONTROL_ENV) or \
        DEFAULT_CRON_CONTROL


def cronscript_enabled(path: str, name: str, log: logging.Logger) -> bool:
    """True when control file ``path`` lets script ``name`` run."""
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding='utf-8') as f:
            parser.read_file(f)
    except FileNotFoundError:
        log.debug('No cron control file %s: %s is enabled.', path, name)
        return True
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise CronControlError(
            'Cannot read the cron control file %s (%s); fix it before %s '
            'can run.' % (path, ' '.join(str(e).split()), name)) from None
    section = name if parser.has_section(name) else 'DEFAULT'
    try:
        return parser.getboolean(section, 'enabled', fallback=True)
    except ValueError:
        raise CronControlError(
            'The cron control file %s says enabled = %r for %s; use true or '
            'false.' % (path, parser.get(section, 'enabled'), name)) \
            from None


@implementer(ILaunchpadCronScript)
class LaunchpadCronScript(LaunchpadScript):
    """See ILaunchpadCronScript."""

    cron_control_file: Optional[str] = None

    def is_enabled(self) -> bool:
        return cronscript_enabled(cron_control_path(self.cron_control_file),
                                  self.name, self.logger)

    def _may_run(self) -> bool:
        if self.is_enabled():
            return True
        self.logger.info('%s is disabled in %s; not running.', self.name,
                         cron_control_path(self.cron_control_file))
        return False

    def _add_framework_options(self) -> None:
        self.parser.add_option(
            '--metrics-dir', dest='metrics_dir', metavar='DIR',
            default=os.environ.get(METRICS_DIR_ENV) or None,
            help='Write the run\'s figures to DIR/<name>.prom for '
            'node_exporter\'s textfile collector (default: $%s).'
            % METRICS_DIR_ENV)

    @property
    def metrics_file(self) -> Optional[str]:
        directory = self.options.metrics_dir
        return metrics_path(directory, self.name) if directory else None

    def _report_end(self, status: int, seconds: float,
                    locked: bool) -> None:
        super()._report_end(status, seconds, locked)
        path = self.metrics_file
        if path is None or self._skipped:
            return
        try:
            write_run(path, self.name, status, seconds, self.items_processed)
        except OSError as e:
            # The run itself is over and its status stands.
            self.logger.warning('Cannot write the metrics file %s: %s; '
                                'check the directory exists and is writable.',
                                path, e.strerror or e)
