"""A chaos soak with an exact audit.

Workers run short explicit transactions through the library (SQLObject
models, a throwaway PostgreSQL cluster, an in-process TCP proxy) while a
seeded driver injects faults: proxy cuts, stalls and slow responses,
terminated backends, fast and immediate restarts, idle-in-transaction and
statement timeouts, and a full connection table.  Every unit of work has a
client-side uid; the audit afterwards checks that each unit reported
committed is in the database exactly once, that units reported failed are
absent, that the ledger sum holds and that nothing leaked.  A
crash-durability case follows (``pg_ctl stop -m immediate`` with fsync on).

Other topologies take other faults: a primary and a standby in network
namespaces, failed over every way (``chaos.topologies.ha``,
``chaos.hafaults``), and a primary behind PgBouncer
(``chaos.topologies.bouncer``).  Each module of ``chaos/topologies/``
registers its topology with ``chaos.topology``; what they share is in
``chaos.base``.

Run it::

    bin/chaos --duration 60 --workers 8 --seed 1
    bin/chaos --topology ha --duration 120

It prints a short table, writes a JSON report and exits non-zero when the
audit fails.  See ``run_soak`` in ``chaos.soak``.
"""

from chaos.faults import KINDS

__all__ = ['KINDS', 'run_soak']


def run_soak(*args, **kw):
    """See chaos.soak.run_soak."""
    from chaos.soak import run_soak as run
    return run(*args, **kw)
