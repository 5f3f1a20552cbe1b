"""TunableLoop: the base class of a batch job run by a loop tuner.

::

    class ExpireSessions(TunableLoop):
        maximum_chunk_size = 10000

        def isDone(self):
            return self.next_id > self.last_id

        def __call__(self, chunk_size):
            ...delete one chunk...
            transaction.commit()
            self.next_id += chunk_size   # moves on once committed

What ``__call__`` returns is ignored, as in Launchpad; a loop that counts
its items declares ``ITunableLoopItems`` and keeps ``items_done``.

    ExpireSessions(log).run()
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from zope.interface import implementer

from canonical.launchpad.scripts.dblooptuner import DBLoopTuner
from canonical.launchpad.scripts.interfaces import ILoopTuner
from canonical.launchpad.scripts.interfaces import ITunableLoop
from canonical.launchpad.scripts.interfaces import ITunableLoopCleanUp
from canonical.launchpad.scripts.interfaces import ITunableLoopEstimate
from canonical.launchpad.scripts.looptuner import LoopStats

__all__ = ['TunableLoop']


@implementer(ITunableLoop, ITunableLoopCleanUp, ITunableLoopEstimate)
class TunableLoop:
    """Subclasses set ``maximum_chunk_size`` and write isDone() and
    __call__(); run() hands the loop to ``tuner_class`` with the class's
    settings (``tuner_settings`` for the tuner's own, such as DBLoopTuner's
    thresholds)."""

    goal_seconds = 2.0
    minimum_chunk_size = 1
    maximum_chunk_size: Optional[int] = None
    cooldown_time: Optional[float] = None
    tuner_class: Any = DBLoopTuner
    tuner_settings: Dict[str, Any] = {}

    def __init__(self, log: logging.Logger,
                 abort_time: Optional[float] = None) -> None:
        self.log = log
        self.abort_time = abort_time
        self.tuner: Optional[ILoopTuner] = None

    def isDone(self) -> bool:
        raise NotImplementedError

    def __call__(self, chunk_size: int) -> Any:
        raise NotImplementedError

    def cleanUp(self) -> None:
        pass

    def estimateRemaining(self) -> Optional[int]:
        return None

    def run(self) -> LoopStats:
        if self.maximum_chunk_size is None:
            raise TypeError('%s must set maximum_chunk_size.'
                            % type(self).__name__)
        self.tuner = self.tuner_class(
            self, self.goal_seconds,
            minimum_chunk_size=self.minimum_chunk_size,
            maximum_chunk_size=self.maximum_chunk_size,
            abort_time=self.abort_time, cooldown_time=self.cooldown_time,
            log=self.log, **self.tuner_settings)
        return self.tuner.run()
