"""The failover section of bin/bench (``--only failover``).

On a primary and a streaming standby (failover_kit.ServerPair), one
writer per system (failover_systems) commits small units with a host list
naming both servers, while the section fails the primary over, round
after round:

* promote -> first commit: ``pg_ctl stop -m immediate`` of the primary,
  then the standby is promoted at t0 (asynchronous standby, then
  synchronous); measured from t0 to each system's first commit that the
  new primary took (the unit returns the server's own address and port);
* silent loss -> first commit: the primary's network namespace drops every
  packet from t0 on (no reset), and the standby is promoted at once, as a
  failover manager would after its detection time, which is left out;
* herd: N threads of one system write when the primary crashes and the
  standby is promoted; from t0 until every thread committed on the new
  primary, and the psycopg2.connect calls made meanwhile (plus the
  library's own count of connection attempts).

The roles swap at each failover; the old primary rejoins as a standby
(pg_rewind) before the next round.  A system that has not committed on
the new primary ``cap`` seconds after t0 is recorded as timed out.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks.failover_kit import ServerPair, Writer, label
from benchmarks.failover_systems import DEFAULTS_SUFFIX
from benchmarks.failover_systems import make_failover_system
from benchmarks.interfaces import IFailoverSystem, IServerPair

__all__ = ['FULL', 'QUICK', 'run_failover', 'run_section', 'add_results',
           'median_or_none', 'in_ms',
           'summary', 'HERD_SYSTEMS', 'METRICS']

FULL = dict(async_rounds=7, sync_rounds=4, silent_rounds=4, herd_rounds=3,
            herd_threads=50, cap=30.0, defaults_cap=12.0, pause=0.01,
            herd_pause=0.05, warm_units=3)
QUICK = dict(async_rounds=2, sync_rounds=1, silent_rounds=2, herd_rounds=1,
             herd_threads=10, cap=20.0, defaults_cap=4.0, pause=0.01,
             herd_pause=0.05, warm_units=2)
HERD_SYSTEMS = ('zopeless', 'zope.sqlalchemy', 'storm')
# Scenario -> the metric its samples go under in results.json.
# The silent scenario is split by where the lost primary stands in the
# host list: libpq tries the hosts in list order, each for up to
# connect_timeout, so the first place costs a system that keeps no memory
# of dead hosts one connect_timeout more.
METRICS = {'async': 'promote-to-commit-async',
           'sync': 'promote-to-commit-sync',
           'silent-first': 'silent-loss-to-commit-listed-first',
           'silent-second': 'silent-loss-to-commit-listed-second'}
Say = Callable[[str], None]


def run_failover(settings: dict, names: Sequence[str], counter=None,
                 say: Say = print, servers=None) -> dict:
    """Every scenario for the systems ``names``; returns the figures
    (see add_results).  ``servers`` (a test kit Servers) is made, on a
    seed of its own, when not given."""
    from canonical.testing.servers import ReplicationLayer, Servers
    own_seed = servers is None and ReplicationLayer.seed is None
    if own_seed:
        say('failover: making the seed node (sample database)')
        ReplicationLayer.setUp()
    owned = servers is None
    servers = servers or Servers()
    started = time.monotonic()
    systems: List[IFailoverSystem] = []
    try:
        pair = ServerPair(servers)
        say('failover: primary %s, standby %s%s' % (
            label(pair.primary), label(pair.standby), '' if
            pair.silent_possible else ' (no network namespaces: the silent '
            'scenario is left out)'))
        figures = _singles(pair, names, settings, systems, say)
        figures['herd'] = {}
        for name in [n for n in HERD_SYSTEMS if n in names]:
            system = _herd_system(name, pair, systems, settings)
            figures['herd'][name] = _herd(pair, system, settings, counter,
                                          say)
        figures['silent_possible'] = pair.silent_possible
        figures['seconds'] = time.monotonic() - started
        return figures
    finally:
        for system in reversed(systems):
            system.close()
        if owned:
            servers.close()
        if own_seed:
            ReplicationLayer.tearDown()


def _singles(pair: IServerPair, names: Sequence[str], settings: dict,
             systems: List[IFailoverSystem], say: Say) -> dict:
    """The promote and silent scenarios, one writer per system."""
    for name in names:
        systems.append(make_failover_system(name, pair.hosts()))
    writers = [Writer(s, pause=settings['pause']) for s in systems]
    for w in writers:
        w.start()
    tally = _Tally()
    plan = [('async', settings['async_rounds']),
            ('sync', settings['sync_rounds'])]
    if pair.silent_possible:
        plan.append(('silent', settings['silent_rounds']))
    try:
        for scenario, rounds in plan:
            pair.set_synchronous(scenario == 'sync')
            for r in range(rounds):
                say('failover: %s round %d/%d' % (scenario, r + 1, rounds))
                _warm(pair, writers, settings)
                key = scenario
                if scenario == 'silent':
                    first = pair.hosts()[0] == (pair.primary.host,
                                                pair.primary.port)
                    key += '-first' if first else '-second'
                failed = {w: dict(w.failure_kinds) for w in writers}
                found, promoting = _event(pair, scenario, writers, settings)
                tally.add(key, writers, found, failed, promoting)
                pair.rejoin()
        pair.set_synchronous(False)
    finally:
        for w in writers:
            w.stop()
    return tally.figures(systems, writers)


class _Tally:
    """What the rounds of the single writers found."""

    def __init__(self) -> None:
        self.samples: Dict[str, Dict[str, list]] = {}
        # scenario -> system -> exception class -> failed attempts
        self.failures: Dict[str, Dict[str, Dict[str, int]]] = {}
        self.promotions: List[float] = []

    def add(self, key: str, writers: Sequence[Writer],
            found: Dict[str, Optional[float]], failed_before: dict,
            promoting: float) -> None:
        self.promotions.append(promoting)
        for w in writers:
            name = w.system.name
            self.samples.setdefault(key, {}).setdefault(name, []).append(
                found[name])
            kinds = self.failures.setdefault(key, {}).setdefault(name, {})
            for kind, count in w.failure_kinds.items():
                count -= failed_before[w].get(kind, 0)
                if count:
                    kinds[kind] = kinds.get(kind, 0) + count

    def figures(self, systems: Sequence[IFailoverSystem],
                writers: Sequence[Writer]) -> dict:
        return {'samples': self.samples, 'failed_attempts': self.failures,
                'promote_seconds': self.promotions,
                'recipes': {s.name: s.recipe for s in systems},
                'fatal': {w.system.name: repr(w.fatal) for w in writers
                          if w.fatal is not None}}


def _warm(pair: IServerPair, writers: Sequence[Writer], settings: dict,
          timeout: float = 60.0) -> None:
    """Wait until every writer committed a few units on the primary."""
    since, server = time.monotonic(), label(pair.primary)
    deadline = since + timeout
    for w in writers:
        w.wait(lambda w=w: len(w.commits_on(server, since)) >=
               settings['warm_units'], deadline)


def _event(pair: IServerPair, scenario: str, writers: Sequence[Writer],
           settings: dict) -> Tuple[Dict[str, Optional[float]], float]:
    """One failover; seconds from t0 to each writer's first commit on the
    new primary (None: none within its cap), and how long the promotion
    itself took."""
    new = label(pair.standby)
    if scenario == 'silent':
        t0 = time.monotonic()
        pair.cut()
    else:
        pair.crash()
        t0 = time.monotonic()
    promoting = time.monotonic()
    pair.promote()
    promoting = time.monotonic() - promoting
    found = {}
    for w in writers:
        cap = settings['cap']
        if scenario == 'silent' and w.system.name.endswith(DEFAULTS_SUFFIX):
            cap = settings['defaults_cap']
        w.wait(lambda w=w: w.first_on(new, t0) is not None, t0 + cap)
        first = w.first_on(new, t0)
        found[w.system.name] = None if first is None else first - t0
    return found, promoting


def _herd_system(name: str, pair: IServerPair,
                 systems: List[IFailoverSystem],
                 settings: dict) -> IFailoverSystem:
    """The system for the herd: the same one, or (with a pool) one sized
    for the herd's threads."""
    for system in systems:
        if system.name == name and name != 'zope.sqlalchemy':
            return system
    system = make_failover_system(name, pair.hosts(),
                                  threads=settings['herd_threads'])
    systems.append(system)
    return system


def _herd(pair: IServerPair, system: IFailoverSystem, settings: dict,
          counter, say: Say) -> List[dict]:
    """Rounds of the herd for one system; a dict of figures per round."""
    writers = [Writer(system, pause=settings['herd_pause'])
               for _ in range(settings['herd_threads'])]
    for w in writers:
        w.start()
    rounds = []
    try:
        for r in range(settings['herd_rounds']):
            say('failover: herd of %d, %s, round %d/%d' % (
                len(writers), system.name, r + 1, settings['herd_rounds']))
            _warm(pair, writers, dict(settings, warm_units=1))
            rounds.append(_herd_event(pair, system, writers, settings,
                                      counter))
            pair.rejoin()
    finally:
        for w in writers:
            w.stop()
    return rounds


def _herd_event(pair: IServerPair, system: IFailoverSystem,
                writers: Sequence[Writer], settings: dict, counter) -> dict:
    new = label(pair.standby)
    attempts, failed = system.attempts(), sum(w.failed_attempts
                                              for w in writers)
    wall = time.time()
    pair.crash()
    t0 = time.monotonic()
    pair.promote()
    firsts = []
    for w in writers:
        w.wait(lambda w=w: w.first_on(new, t0) is not None,
               t0 + settings['cap'])
        first = w.first_on(new, t0)
        firsts.append(None if first is None else first - t0)
    done = [f for f in firsts if f is not None]
    calls = counter.between(wall, time.time()) if counter else []
    stopped = [repr(w.fatal) for w in writers if w.fatal is not None]
    return dict(
        threads=len(writers),
        all_done=max(done) if len(done) == len(firsts) else None,
        median_done=statistics.median(done) if done else None,
        timed_out=len(firsts) - len(done),
        connect_calls=len(calls) if counter else None,
        failed_connect_calls=len([c for c in calls if not c[2]])
        if counter else None,
        library_attempts=None if attempts is None
        else system.attempts() - attempts,
        failed_unit_attempts=sum(w.failed_attempts for w in writers) - failed,
        writers_stopped=len(stopped), fatal=stopped[0] if stopped else None)


# -- results -------------------------------------------------------------------

def median_or_none(samples: Sequence[Optional[float]]) -> Optional[float]:
    # A timed-out sample counts as longer than any other.
    value = statistics.median([float('inf') if s is None else s
                               for s in samples])
    return None if value == float('inf') else value


def in_ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value * 1000, 1)


def add_results(results, figures: dict, settings: dict) -> None:
    """The figures as results.json entries (workload "failover", times
    in ms, ratios to the library)."""
    for scenario, by_system in figures['samples'].items():
        for name, samples in by_system.items():
            cap = settings['cap']
            if scenario.startswith('silent') and \
                    name.endswith(DEFAULTS_SUFFIX):
                cap = settings['defaults_cap']
            done = [s for s in samples if s is not None]
            results.add(
                name, 'failover', METRICS[scenario],
                in_ms(median_or_none(samples)), 'ms', floor='zopeless',
                min=in_ms(min(done)) if done else None,
                max=in_ms(max(samples)) if len(done) == len(samples) else None,
                rounds=len(samples), timed_out=len(samples) - len(done),
                cap_s=cap, samples_ms=[in_ms(s) for s in samples],
                failed_attempts=sum(
                    figures['failed_attempts'][scenario][name].values()),
                failed_attempt_kinds=figures['failed_attempts'][scenario][
                    name],
                fatal=figures['fatal'].get(name))
    for name, rounds in figures['herd'].items():
        done = [r['all_done'] for r in rounds]
        calls = [r['connect_calls'] for r in rounds]
        attempts = [r['library_attempts'] for r in rounds]
        results.add(
            name, 'failover', 'herd-promote-to-all-committed',
            in_ms(median_or_none(done)), 'ms', floor='zopeless',
            threads=rounds[0]['threads'], rounds=len(rounds),
            samples_ms=[in_ms(d) for d in done],
            median_thread_ms=[in_ms(r['median_done']) for r in rounds],
            timed_out=sum(r['timed_out'] for r in rounds),
            fatal=([r['fatal'] for r in rounds if r['fatal']] or [None])[0])
        results.add(
            name, 'failover', 'herd-connect-calls',
            statistics.median(calls) if None not in calls else None,
            'psycopg2.connect calls', floor='zopeless',
            samples=calls,
            failed=[r['failed_connect_calls'] for r in rounds],
            library_attempts=attempts if attempts[0] is not None else None,
            failed_unit_attempts=[r['failed_unit_attempts'] for r in rounds])


def summary(results) -> str:
    """Lines for the terminal: each failover figure, and the issue's
    figures before the failover work beside them."""
    lines = ['Failover (medians; before the failover work: promote -> first '
             'commit 0.05-0.09 s, silent loss about 20 s):']
    for e in results.entries:
        if e['workload'] != 'failover':
            continue
        if e['unit'] == 'ms':
            value = ('%.0f ms' % e['median'] if e['median'] is not None
                     else 'no commit within %g s' % e['cap_s']
                     if 'cap_s' in e else 'timed out')
            extra = ''
            if e.get('min') is not None:
                extra = ' (min %.0f, max %s, %d rounds)' % (
                    e['min'], '%.0f' % e['max'] if e.get('max') is not None
                    else '-', e['rounds'])
            if e.get('timed_out'):
                extra += ', %d timed out' % e['timed_out']
            if e.get('fatal'):
                extra += '; THE WRITER STOPPED: %s' % e['fatal']
        else:
            value = '%s %s' % (e['median'], e['unit'])
            extra = ''
            if e.get('library_attempts'):
                extra = ' (library attempts %s)' % e['library_attempts']
        lines.append('  %-36s %-34s %s%s' % (e['metric'], e['system'], value,
                                             extra))
    return '\n'.join(lines)


def run_section(results, quick: bool, names: Sequence[str], counter=None,
                say: Say = print) -> dict:
    """The section as bin/bench runs it: figures into ``results``; returns
    what results-meta.json keeps of the run."""
    settings = QUICK if quick else FULL
    started, load = time.time(), os.getloadavg()
    # The transaction package logs each failed second phase (an anchor's
    # COMMIT on a dying server) at CRITICAL; they are counted instead.
    txn = logging.getLogger('txn')
    level = txn.level
    txn.setLevel(logging.CRITICAL + 1)
    try:
        figures = run_failover(settings, names, counter, say)
    finally:
        txn.setLevel(level)
    add_results(results, figures, settings)
    return dict(settings=settings, python=platform.python_version(),
                cpus=os.cpu_count(), started=started, loadavg_before=load,
                loadavg_after=os.getloadavg(), seconds=figures['seconds'],
                silent_possible=figures['silent_possible'],
                # ReplicationNode.promote(): pg_ctl promote -w and the
                # kit's checks; writers commit before it returns.
                promote_call_ms=[in_ms(p) for p in
                                 figures['promote_seconds']],
                recipes=figures['recipes'])
