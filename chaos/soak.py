"""The soak: servers (see chaos.topology), workers, faults, then the audit.

::

    from chaos.soak import run_soak
    report = run_soak(duration=20, workers=8, seed=1)
    assert report['passed'], report['failures']
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

import canonical.lp
from chaos import audit
from chaos.durability import durability_case
from chaos.faults import KINDS
from chaos.interfaces import IFaultInjector, ITopology
from chaos.models import OPENING_BALANCE, SCHEMA
from chaos.report import figures, write_json
from chaos.base import DBNAME, MAX_CONNECTIONS
from chaos.topology import TOPOLOGY_KINDS, make_topology, topology_for
from chaos.readers import ReadChecker
from chaos.workload import JournalBook, Worker
from canonical.testing.cluster import default_base
from canonical.testing.cluster.conf import PASSWORD_ROLE_PASSWORD
from canonical.database.hosts import servers_for
from canonical.database.outcomes import outcomes_for
from canonical.database.prepared import prepared_for
from canonical.database.reconnect import coordinator_for
from canonical.lp import initZopeless

__all__ = ['run_soak', 'DBNAME', 'MAX_CONNECTIONS']

_STOP_GRACE = 30.0  # seconds a worker has to finish its unit after the end
_ROUNDS_LIMIT = 600.0  # seconds the faults of all rounds may take at most


class _LogTally(logging.Handler):
    """Counts the library's log records; keeps the serious ones."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Dict[str, int] = {}
        self.serious: List[str] = []
        self.password_leaks = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # The workers log in with a password: it must never show, in a
        # message or in the traceback of an exception logged with it.
        text = message + (self.formatException(record.exc_info)
                          if record.exc_info else '')
        if PASSWORD_ROLE_PASSWORD in text:
            self.password_leaks += 1
        if record.levelno < logging.INFO:
            return
        self.counts[record.levelname] = self.counts.get(
            record.levelname, 0) + 1
        if record.levelno >= logging.ERROR and len(self.serious) < 20:
            self.serious.append('%s %s: %s' % (
                record.levelname, record.name, message[:300]))


class _OutageMonitor(threading.Thread):
    """Samples the reconnect coordinator: when outages start and end."""

    def __init__(self, coordinator: Any) -> None:
        super().__init__(name='chaos-monitor', daemon=True)
        self.coordinator = coordinator
        self.stop_event = threading.Event()
        self.outages: List[float] = []
        self._since: Optional[float] = None

    def run(self) -> None:
        while not self.stop_event.wait(0.01):
            now = time.monotonic()
            if self.coordinator.in_outage:
                if self._since is None:
                    self._since = now
            elif self._since is not None:
                self.outages.append(now - self._since)
                self._since = None

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
        if self._since is not None:
            self.outages.append(time.monotonic() - self._since)
            self._since = None


def _stacks(threads: List[threading.Thread]) -> Dict[str, str]:
    frames = sys._current_frames()
    out = {}
    for thread in threads:
        frame = frames.get(thread.ident)
        if frame is not None:
            out[thread.name] = ''.join(traceback.format_stack(frame)[-12:])
    return out


def _build(report: Dict[str, Any], servers: ITopology, accounts: int,
           say: Any) -> None:
    say('starting the %s servers in %s' % (servers.name, servers.base))
    servers.start(SCHEMA, accounts, OPENING_BALANCE)
    report['dbhost'] = servers.dbhost


def _wait_for_faults(injector: IFaultInjector, duration: float,
                     rounds: Optional[int]) -> None:
    time.sleep(duration)
    if rounds is not None:
        # Until every kind came up ``rounds`` times, then a calm second in
        # which the workers commit on what the last fault left.
        injector.join(_ROUNDS_LIMIT)
        time.sleep(1.0)


def run_soak(duration: float = 60.0, workers: int = 8, seed: Any = 0,
             resolve: bool = True, kinds: tuple = KINDS,
             interval: float = 1.5, accounts: int = 50,
             durability_units: int = 100, base: Optional[str] = None,
             keep: bool = False, json_path: Optional[str] = None,
             reconnect_timeout: Optional[float] = None,
             echo: Any = None, topology: Optional[str] = None,
             rounds: Optional[int] = None,
             readers: int = 0) -> Dict[str, Any]:
    """Run the soak and return the report (``report['passed']``).

    ``topology`` ('single', 'ha' or 'bouncer') defaults to the one taking
    ``kinds``; with ``rounds`` the soak lasts at least until every kind
    came up that many times.  The crash-durability case runs on 'single'.
    ``readers`` threads run read units under StandbyDatabasePolicy, each
    checking that the workers' last commits are there (see readers.py).
    """
    say = echo or (lambda text: None)
    if canonical.lp.isZopeless():
        raise RuntimeError('a transaction manager is already installed; '
                           'the soak installs its own')
    kinds = tuple(kinds)
    name = topology or topology_for(kinds)
    unknown = set(kinds) - set(TOPOLOGY_KINDS.get(name, ()))
    if unknown:
        raise ValueError('fault kinds %s are not of topology %s' % (
            ', '.join(sorted(unknown)), name))
    base = os.path.abspath(base or os.path.join(
        default_base(), 'chaos-%d' % os.getpid()))
    servers = make_topology(name, base)
    tally = _LogTally()
    library_log = logging.getLogger('canonical.database')
    saved_log = (library_log.level, library_log.propagate)
    library_log.addHandler(tally)
    library_log.setLevel(logging.DEBUG)
    library_log.propagate = False
    report: Dict[str, Any] = {
        'seed': seed, 'workers': workers, 'duration': duration,
        'resolve_commit_outcome': resolve, 'fault_kinds': list(kinds),
        'reconnect_timeout': reconnect_timeout,
        'cluster': base, 'topology': name,
    }
    try:
        _build(report, servers, accounts, say)
        baseline = audit.leftovers(servers.admin, DBNAME, 0,
                                   wait=0)['backends']
        ztm = initZopeless(dbname=DBNAME, dbhost=servers.dbhost,
                           dbuser=servers.dbuser, password=servers.password,
                           implicitBegin=False,
                           reconnect_timeout=reconnect_timeout,
                           resolve_commit_outcome=resolve)
        coordinator = coordinator_for(ztm.config)
        monitor = _OutageMonitor(coordinator)
        journal = JournalBook()
        stop, give_up = threading.Event(), threading.Event()
        crew = [Worker(i, ztm, seed, accounts, journal, stop, give_up,
                       resolve) for i in range(workers)]
        checkers = [ReadChecker(i, ztm, crew, stop) for i in range(readers)]
        injector = servers.injector(seed, kinds, interval, rounds)
        say('soaking for %.0f s: %d workers, seed %s, faults: %s'
            % (duration, workers, seed, ', '.join(kinds) or 'none'))
        started = time.monotonic()
        monitor.start()
        for worker in crew + checkers:
            worker.start()
        injector.start()
        _wait_for_faults(injector, duration, rounds)
        injector.stop()
        ended = time.monotonic()
        stop.set()
        deadline = time.monotonic() + _STOP_GRACE
        for worker in crew:
            worker.join(max(0.1, deadline - time.monotonic()))
        if any(w.is_alive() for w in crew):
            give_up.set()
            deadline = time.monotonic() + _STOP_GRACE
            for worker in crew:
                worker.join(max(0.1, deadline - time.monotonic()))
        for checker in checkers:
            checker.join(max(0.1, deadline - time.monotonic()))
        hung = [w for w in crew + checkers if w.is_alive()]
        monitor.stop()
        report['stacks_of_hung_workers'] = _stacks(hung)
        if hung:
            # Free them (blocked on a lock, say) so the run can end.
            conn = servers.admin()
            try:
                conn.cursor().execute(
                    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity'
                    ' WHERE application_name = %s AND datname = %s',
                    (audit.APP_NAME, DBNAME))
            finally:
                conn.close()
            for worker in hung:
                worker.join(10)
        prepared = prepared_for(ztm.config)
        outcomes = outcomes_for(ztm.config)
        report['commit_outcomes'] = {
            'table_available': outcomes.available,
            'lookups': outcomes.lookups,
            'terminated': outcomes.terminated,
        }
        report['reconnect'] = {
            'attempts': coordinator.attempts,
            'outage_attempts': coordinator.outage_attempts,
            'outages': coordinator.outages,
            'last_downtime': round(coordinator.last_downtime, 3),
            'refusals': dict(coordinator.refusals),
            'commits_resolved': prepared.settled,
            'orphans_recovered': prepared.orphans_recovered,
            'deferred_prepared': prepared.deferred,
            'deferred_prepared_finished': prepared.deferred_finished,
            'stale_primary_refused': servers_for(ztm.config).stale_refused,
        }
        report['seconds'] = round(ended - started, 3)
        ztm.uninstall()
        servers.release()
        if injector.is_alive():
            report['stacks_of_hung_workers'].update(_stacks([injector]))

        units = [u for w in crew for u in w.units]
        conn = servers.admin(dbname=DBNAME)
        try:
            report['units'] = audit.audit_units(
                conn, units, journal.entries, injector.server_lost)
            report['invariant'] = audit.ledger_invariant(conn)
            if checkers:
                report['reads'] = audit.audit_reads(
                    conn, checkers, injector.server_lost)
        finally:
            conn.close()
        report['split_brain_writes'] = injector.split_brain_writes
        report['leaks'] = servers.leftovers(baseline)
        unexpected: Dict[str, str] = {}
        for worker in crew:
            unexpected.update(worker.unexpected)
        report['anomalies'] = {
            'hung_workers': len(hung),
            'crashed_workers': [w.crashed for w in crew if w.crashed],
            'leftover_transactions': sum(w.leftover_transactions
                                         for w in crew),
            'unexpected_errors': unexpected,
            'not_joined_by_synchronizer': sum(
                1 for w in crew if w.joined_by_synchronizer is False),
            'fault_injector_crashed': injector.crashed,
        }
        report.update(figures(units, crew, injector, monitor.outages,
                              started))
        report['library_log'] = {'counts': dict(tally.counts),
                                 'serious': list(tally.serious)}
        if durability_units and name == 'single':
            say('durability case: %d units, then a crash'
                % durability_units)
            report['durability'] = durability_case(
                servers.cluster, servers.admin, servers.app, DBNAME,
                accounts, durability_units, seed)
        report['final_leaks'] = servers.leftovers(baseline)
    except BaseException:
        report['error'] = traceback.format_exc()
        raise
    finally:
        servers.release()
        if canonical.lp.isZopeless():
            canonical.lp.installedTransactionManager().uninstall()
        library_log.removeHandler(tally)
        library_log.setLevel(saved_log[0])
        library_log.propagate = saved_log[1]
        report['password_leaks'] = tally.password_leaks + (
            PASSWORD_ROLE_PASSWORD in json.dumps(report, default=str))
        report['library_wrong'] = audit.library_wrong(report)
        report['failures'] = audit.failures(report)
        if 'error' in report:
            report['failures'].append('the soak itself failed')
        report['passed'] = not report['failures']
        kept = keep or not report['passed']
        try:
            servers.close(kept)
        finally:
            if kept:
                report['cluster_kept'] = servers.base
            if json_path:
                write_json(report, json_path)
    return report
