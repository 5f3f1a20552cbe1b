"""Which of a thread's two connections a unit begins on: the writer's, or
the read units' (readers.py), as the thread's database policy says.

A thread's state holds the writer's connection, SQLObject connection and
data manager; the read units' three are made the first time a standby
policy is in force at a unit's start.  Choosing swaps which three the
state uses, so the transaction manager, the data manager and SQLObject
models work unchanged on either.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

import transaction

from canonical.database.datamanager import ZopelessDataManager
from canonical.database.interfaces import DEFAULT_FLAVOR
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IDatabasePolicy
from canonical.database.interfaces import PRIMARY_FLAVOR
from canonical.database.readers import StandbyConnection
from canonical.database.sqlbase import ZopelessSQLObjectConnection
from canonical.database.standbys import standbys_for

__all__ = ['route']


def route(state: Any, config: IDatabaseConfig,
          policy: Optional[IDatabasePolicy]) -> None:
    """Point ``state`` (a thread's, with no unit open) at the connection
    ``policy`` gives; DisallowedStore when it allows none."""
    if policy is None or policy.flavor_for(DEFAULT_FLAVOR) == PRIMARY_FLAVOR:
        state.db, state.sqlconn, state.dm = state.writer
        return
    if state.reader is None:
        monitor = standbys_for(config)
        monitor.start()
        db = StandbyConnection(config, monitor)
        sqlconn = ZopelessSQLObjectConnection(db, debug=config.debug)
        state.reader = (db, sqlconn,
                        ZopelessDataManager(db, sqlconn, transaction.manager))
        # Closed with the thread, as the writer's connection is.
        weakref.finalize(state, db.close).atexit = False
    state.reader[0].policy = policy
    state.db, state.sqlconn, state.dm = state.reader
