"""The soak: a throwaway cluster, a proxy, workers, faults, then the audit.

::

    from canonical.database.chaos.soak import run_soak
    report = run_soak(duration=20, workers=8, seed=1)
    assert report['passed'], report['failures']
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

import psycopg2

import canonical.lp
from canonical.database.chaos import audit
from canonical.database.chaos.durability import durability_case
from canonical.database.chaos.faults import KINDS, FaultInjector
from canonical.database.chaos.models import OPENING_BALANCE, SCHEMA
from canonical.database.chaos.report import figures, write_json
from canonical.database.chaos.workload import JournalBook, Worker
from canonical.database.cluster import Cluster, default_base
from canonical.database.prepared import prepared_for
from canonical.database.reconnect import coordinator_for
from canonical.database.cluster.conf import PASSWORD_ROLE
from canonical.database.cluster.conf import PASSWORD_ROLE_PASSWORD
from canonical.lp import initZopeless

__all__ = ['run_soak', 'DBNAME', 'MAX_CONNECTIONS']

DBNAME = 'chaos'
MAX_CONNECTIONS = 40
_STOP_GRACE = 30.0  # seconds a worker has to finish its unit after the end


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


def _start_cluster(base: str) -> Cluster:
    cluster = Cluster(base, fsync=True)
    cluster.initialise()
    conf = os.path.join(cluster.datadir, 'postgresql.conf')
    with open(conf) as f:
        text = f.read()
    marker = '# chaos soak\n'
    if marker not in text:
        # Few slots, so "too many connections" is cheap to provoke.
        with open(conf, 'a') as f:
            f.write('%smax_connections = %d\n' % (marker, MAX_CONNECTIONS))
    return cluster.start()


def _stacks(threads: List[threading.Thread]) -> Dict[str, str]:
    frames = sys._current_frames()
    out = {}
    for thread in threads:
        frame = frames.get(thread.ident)
        if frame is not None:
            out[thread.name] = ''.join(traceback.format_stack(frame)[-12:])
    return out


def run_soak(duration: float = 60.0, workers: int = 8, seed: Any = 0,
             resolve: bool = True, kinds: tuple = KINDS,
             interval: float = 1.5, accounts: int = 50,
             durability_units: int = 100, base: Optional[str] = None,
             keep: bool = False, json_path: Optional[str] = None,
             reconnect_timeout: Optional[float] = None,
             echo: Any = None) -> Dict[str, Any]:
    """Run the soak and return the report (``report['passed']``)."""
    say = echo or (lambda text: None)
    if canonical.lp.isZopeless():
        raise RuntimeError('a transaction manager is already installed; '
                           'the soak installs its own')
    base = os.path.abspath(base or os.path.join(
        default_base(), 'chaos-%d' % os.getpid()))
    say('starting a throwaway cluster in %s' % base)
    cluster = _start_cluster(base)

    def admin(dbname: str = 'postgres', **kw: Any) -> Any:
        conn = psycopg2.connect(host=cluster.rundir, port=cluster.port,
                                user=cluster.superuser, dbname=dbname,
                                application_name=kw.pop(
                                    'application_name', 'chaos-admin'), **kw)
        conn.autocommit = True
        return conn

    def app() -> Any:
        return psycopg2.connect(host='127.0.0.1', port=cluster.port,
                                user='launchpad', dbname=DBNAME,
                                application_name='chaos-setup')

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
        'cluster': base,
    }
    proxy = None
    try:
        conn = admin()
        try:
            conn.cursor().execute('DROP DATABASE IF EXISTS %s' % DBNAME)
            conn.cursor().execute('CREATE DATABASE %s OWNER launchpad'
                                  % DBNAME)
        finally:
            conn.close()
        conn = app()
        try:
            cur = conn.cursor()
            cur.execute(SCHEMA)
            cur.execute('INSERT INTO chaos_account (id, balance, opening) '
                        'SELECT g, %s, %s FROM generate_series(1, %s) g',
                        (OPENING_BALANCE, OPENING_BALANCE, accounts))
            # The workers use the password-protected role.
            cur.execute('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES '
                        'IN SCHEMA public TO %s; GRANT USAGE ON ALL '
                        'SEQUENCES IN SCHEMA public TO %s'
                        % (PASSWORD_ROLE, PASSWORD_ROLE))
            conn.commit()
        finally:
            conn.close()
        baseline = audit.leftovers(admin, DBNAME, 0, wait=0)['backends']

        from canonical.database.chaos.proxy import ChaosProxy
        proxy = ChaosProxy('127.0.0.1', cluster.port).start()
        ztm = initZopeless(dbname=DBNAME,
                           dbhost='127.0.0.1 port=%d' % proxy.port,
                           dbuser=PASSWORD_ROLE,
                           password=PASSWORD_ROLE_PASSWORD,
                           implicitBegin=False,
                           reconnect_timeout=reconnect_timeout,
                           resolve_commit_outcome=resolve)
        coordinator = coordinator_for(ztm.config)
        monitor = _OutageMonitor(coordinator)
        journal = JournalBook()
        stop, give_up = threading.Event(), threading.Event()
        crew = [Worker(i, ztm, seed, accounts, journal, stop, give_up,
                       resolve) for i in range(workers)]
        injector = FaultInjector(seed, cluster, proxy, admin, DBNAME,
                                 kinds=kinds, interval=interval)
        say('soaking for %.0f s: %d workers, seed %s, faults: %s'
            % (duration, workers, seed, ', '.join(kinds) or 'none'))
        started = time.monotonic()
        monitor.start()
        for worker in crew:
            worker.start()
        injector.start()
        time.sleep(duration)
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
        hung = [w for w in crew if w.is_alive()]
        monitor.stop()
        report['stacks_of_hung_workers'] = _stacks(hung)
        if hung:
            # Free them (blocked on a lock, say) so the run can end.
            conn = admin()
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
        }
        report['seconds'] = round(ended - started, 3)
        ztm.uninstall()
        proxy.close()
        if injector.is_alive():
            report['stacks_of_hung_workers'].update(_stacks([injector]))

        units = [u for w in crew for u in w.units]
        conn = admin(dbname=DBNAME)
        try:
            report['units'] = audit.audit_units(conn, units, journal.entries)
            report['invariant'] = audit.ledger_invariant(conn)
        finally:
            conn.close()
        report['leaks'] = audit.leftovers(admin, DBNAME, baseline)
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
        if durability_units:
            say('durability case: %d units, then a crash'
                % durability_units)
            report['durability'] = durability_case(
                cluster, admin, app, DBNAME, accounts, durability_units,
                seed)
        report['final_leaks'] = audit.leftovers(admin, DBNAME, baseline)
    except BaseException:
        report['error'] = traceback.format_exc()
        raise
    finally:
        if proxy is not None:
            proxy.close()
        if canonical.lp.isZopeless():
            canonical.lp.installedTransactionManager().uninstall()
        library_log.removeHandler(tally)
        library_log.setLevel(saved_log[0])
        library_log.propagate = saved_log[1]
        report['password_leaks'] = tally.password_leaks + (
            PASSWORD_ROLE_PASSWORD in json.dumps(report, default=str))
        report['failures'] = audit.failures(report)
        if 'error' in report:
            report['failures'].append('the soak itself failed')
        report['passed'] = not report['failures']
        if keep or not report['passed']:
            try:
                cluster.stop('fast')
            except Exception:  # noqa: BLE001 - best effort
                pass
            report['cluster_kept'] = base
        else:
            cluster.destroy()
            shutil.rmtree(base, ignore_errors=True)
        if json_path:
            write_json(report, json_path)
    return report
