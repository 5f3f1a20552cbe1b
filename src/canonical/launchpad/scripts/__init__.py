"""Cron scripts, daemons and batch loops on top of initZopeless().

The names are Launchpad's: ``LaunchpadScript`` and ``LaunchpadCronScript``
(options, logging, a lock, clean stops on signals), ``LoopTuner``,
``DBLoopTuner`` and ``TunableLoop`` (batch jobs whose chunks size
themselves).  The contracts are in ``interfaces``.
"""

from canonical.launchpad.scripts.base import LaunchpadScript
from canonical.launchpad.scripts.cron import LaunchpadCronScript
from canonical.launchpad.scripts.cron import cronscript_enabled
from canonical.launchpad.scripts.dblooptuner import DBLoopTuner
from canonical.launchpad.scripts.interfaces import ITunableLoop
from canonical.launchpad.scripts.interfaces import ITunableLoopItems
from canonical.launchpad.scripts.interfaces import LaunchpadScriptFailure
from canonical.launchpad.scripts.interfaces import LockHeldError
from canonical.launchpad.scripts.interfaces import ScriptInterrupted
from canonical.launchpad.scripts.interfaces import \
    SilentLaunchpadScriptFailure
from canonical.launchpad.scripts.logger import logger
from canonical.launchpad.scripts.logger import logger_options
from canonical.launchpad.scripts.looptuner import LoopTuner
from canonical.launchpad.scripts.tunableloop import TunableLoop

__all__ = [
    'LaunchpadScript',
    'LaunchpadCronScript',
    'LaunchpadScriptFailure',
    'SilentLaunchpadScriptFailure',
    'ScriptInterrupted',
    'LockHeldError',
    'ITunableLoop',
    'ITunableLoopItems',
    'LoopTuner',
    'DBLoopTuner',
    'TunableLoop',
    'cronscript_enabled',
    'logger',
    'logger_options',
]
