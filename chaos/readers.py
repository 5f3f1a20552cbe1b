"""Read units under StandbyDatabasePolicy, checked against the workers'
commits: read-your-writes, audited.

A ReadChecker thread takes, before each read unit, the uids of the last
units the workers of this process reported committed, then looks them up
in a read unit under ``StandbyDatabasePolicy`` (a standby when one is fit,
else the primary).  Every uid must be there: the library waits for the
standby to replay this process's last commit, or reads on the primary.
A uid missing from a read is judged by the audit against the final
database (see audit.audit_reads): one the servers lost in a failover
(asynchronous replication) is not the library's doing.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import transaction

from chaos.models import Transfer
from chaos.workload import error_name
from chaos.workload import set_up_thread
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import DisconnectionError
from canonical.database.policy import StandbyDatabasePolicy

__all__ = ['ReadChecker']

# Errors a read unit may meet while faults are injected.
_EXPECTED = (DisconnectionError, DatabaseUnavailableError)
_LOOKUP = 'SELECT uid FROM %s WHERE uid = ANY(%%s)' % Transfer.sqlmeta.table


class ReadChecker(threading.Thread):
    """See the module docstring; ``crew`` are the soak's workers."""

    def __init__(self, index: int, ztm: Any, crew: List[Any],
                 stop: threading.Event, sample: int = 20) -> None:
        super().__init__(name='chaos-reader-%d' % index, daemon=True)
        self.ztm = ztm
        self.crew = crew
        self.stop = stop
        self.sample = sample
        self.reads = 0
        self.on_standby = 0
        self.checked = 0
        # (uid, done, when the read began) of each uid a read missed.
        self.misses: List[tuple] = []
        self.errors: Dict[str, int] = {}
        self.unexpected: Dict[str, str] = {}
        self.crashed = None

    def _committed(self) -> Dict[str, float]:
        units = [u for w in self.crew for u in list(w.units)
                 if u.state == 'committed']
        units.sort(key=lambda u: u.done)
        return {u.uid: u.done for u in units[-self.sample:]}

    def run(self) -> None:
        try:
            set_up_thread(self.ztm)
            while not self.stop.is_set():
                self._read_once()
        except BaseException as e:  # noqa: BLE001 - reported by the audit
            self.crashed = '%s: %s' % (error_name(e), str(e)[:300])

    def _read_once(self) -> None:
        wanted = self._committed()
        began = time.monotonic()
        try:
            with StandbyDatabasePolicy():
                for attempt in transaction.manager.attempts(3):
                    with attempt:
                        found = {row[0] for row in
                                 self.ztm.connection().execute(
                                     _LOOKUP, (list(wanted),)).fetchall()}
                        standby = self.ztm.connection().standby
        except _EXPECTED as e:
            self.errors[error_name(e)] = self.errors.get(
                error_name(e), 0) + 1
            time.sleep(0.05)
            return
        except Exception as e:  # noqa: BLE001 - counted as unexpected
            self.unexpected.setdefault(error_name(e), str(e)[:300])
            time.sleep(0.05)
            return
        self.reads += 1
        self.on_standby += standby is not None
        self.checked += len(wanted)
        for uid, done in wanted.items():
            if uid not in found:
                self.misses.append((uid, done, began))
        time.sleep(0.01)

    def report(self) -> Dict[str, Any]:
        return {'reads': self.reads, 'on_standby': self.on_standby,
                'uids_checked': self.checked, 'errors': dict(self.errors),
                'unexpected_errors': dict(self.unexpected),
                'crashed': self.crashed}
