"""Waiting for the database: one probe per process, however many threads.

While the database is reachable every thread connects on its own.  When a
connection attempt fails with a transient error the coordinator enters an
outage: one thread (the prober) retries with capped exponential backoff and
jitter; every other thread that needs a connection sleeps on a condition
instead of adding attempts.  When the prober gets through, the outage ends,
the sleepers wake at once and each makes its own connection.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Dict, Optional

import psycopg2
from zope.interface import implementer

from canonical.database.classify import connect_failure_kind
from canonical.database.classify import is_permanent_connect_error
from canonical.database.classify import server_message
from canonical.database.classify import sqlstate
from canonical.database.classify import with_sqlstate
from canonical.database.interfaces import ConnectionFailedError
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IReconnectCoordinator
from canonical.database.hosts import servers_for
from canonical.database.perdatabase import PerDatabase
from canonical.database.stats import stats_for

__all__ = ['ReconnectCoordinator', 'coordinator_for', 'Backoff']

log = logging.getLogger('canonical.database.reconnect')

# Makes a psycopg2 connection from a configuration.
Connector = Callable[[IDatabaseConfig], Any]


class Backoff:
    """Capped exponential delays with "equal jitter": each delay lies in
    [d/2, d], so attempts never synchronise and never exceed the cap."""

    def __init__(self, initial: float, cap: float,
                 rng: Optional[random.Random] = None) -> None:
        self.initial = initial
        self.cap = cap
        self._rng = rng or random.Random()
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay / 2 + self._rng.random() * delay / 2


# What to do when the wait ends, by what the last attempt met.
_ADVICE = {
    None: 'Check that the server is running.',
    'read_only': (
        'Every server that answered refuses writes: a standby, or a '
        'primary fenced (default_transaction_read_only) or demoted.  '
        'Promote a standby or lift the fence.'),
    'stale': (
        'The server that answered is a demoted primary (an older timeline '
        'than one this process wrote to); writing there would split the '
        'history.  Fence it and point the job at the new primary.'),
}

# How long a successful connection vouches for the database: within it,
# threads connect at the same time without waiting for each other.
_TRUST_SECONDS = 0.5


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


@implementer(IReconnectCoordinator)
class ReconnectCoordinator:
    """Connection making for one database, shared by a process's threads;
    see IReconnectCoordinator.  ``config`` names the database in messages;
    each connect() brings the configuration (timeouts, backoff) of its
    caller."""

    def __init__(self, config: IDatabaseConfig,
                 connector: Optional[Connector] = None) -> None:
        self.config = config
        self._connector = connector or self._psycopg2_connect
        self._cond = threading.Condition(threading.Lock())
        self._in_outage = False
        self._prober: Optional[threading.Thread] = None
        self._generation = 0
        self._ever_connected = False
        self._in_flight = 0         # direct attempts not yet answered
        self._last_success = -1e9   # monotonic time of the last connect
        self._last_loss = -1e9      # ... and of the last connection lost
        self._outage_started = 0.0
        self._last_attempt = -1e9   # monotonic time of the last attempt
        # Figures for tests, benchmarks and the chaos soak; those that
        # monitoring reads too live in the database's statistics.
        self.stats = stats_for(config)
        self.refusals: Dict[str, int] = self.stats.connect_failures
        self.attempts = 0
        self.outage_attempts = 0
        self.last_downtime = 0.0
        self.last_failure: Optional[str] = None
        # Only the code of the last failure: the exception itself would
        # keep its traceback's frames, and the connections their threads
        # hold, alive after those threads ended.
        self._last_sqlstate: Optional[str] = None

    @staticmethod
    def _psycopg2_connect(config: IDatabaseConfig) -> Any:
        return servers_for(config).connect(config)

    @property
    def in_outage(self) -> bool:
        return self._in_outage

    @property
    def outages(self) -> int:
        return self.stats.outages

    def note_loss(self) -> None:
        """A connection of this database was found dead: until the next
        success, threads connect one at a time."""
        self._last_loss = time.monotonic()

    def _trusted(self) -> bool:
        # Threads may connect side by side only while the database answered
        # lately and no connection has been lost since.
        return (self._last_success > self._last_loss and
                time.monotonic() - self._last_success <= _TRUST_SECONDS)

    def _attempt(self, config: IDatabaseConfig) -> Any:
        self.attempts += 1
        self._last_attempt = time.monotonic()
        try:
            conn = self._connector(config)
        except psycopg2.Error as e:
            kind = connect_failure_kind(e)
            self.refusals[kind] = self.refusals.get(kind, 0) + 1
            self.last_failure, self._last_sqlstate = kind, sqlstate(e)
            if is_permanent_connect_error(e, self._ever_connected):
                raise with_sqlstate(ConnectionFailedError(
                    'Cannot connect to %s: %s.  Check the database name, user '
                    'and password; retrying would not help.'
                    % (self.config.describe(), server_message(e))),
                    e) from None
            raise
        self._ever_connected = True
        self.stats.connections += 1
        return conn

    def connect(self, config: IDatabaseConfig,
                deadline: Optional[float] = None,
                reason: Optional[str] = None) -> Any:
        """See IReconnectCoordinator.connect."""
        # The in-flight count is released in the same try that takes it,
        # so a signal handler raising anywhere in between (a script's
        # SIGTERM, say) cannot leave other threads waiting for an attempt
        # that is not being made.
        direct = False
        try:
            with self._cond:
                # While the database has not answered anyone lately, one
                # attempt at a time finds out whether it is there: threads
                # arriving together at the start of an outage wait for its
                # verdict instead of all trying (and all hanging on a black
                # hole).  Once it answered, threads connect side by side.
                while (not self._in_outage and self._in_flight and
                       not self._trusted()):
                    if not self._cond.wait(_remaining(deadline)):
                        self._raise_unavailable(config)
                if not self._in_outage:
                    self._in_flight += 1
                    direct = True
            if direct:
                try:
                    conn = self._attempt(config)
                except psycopg2.Error as e:
                    self._begin_outage(server_message(e),
                                       warned=bool(reason))
                else:
                    with self._cond:
                        self._last_success = time.monotonic()
                    return conn
        finally:
            if direct:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()
        return self._wait(config, deadline)

    def _begin_outage(self, message: str, warned: bool) -> None:
        with self._cond:
            if self._in_outage:
                return
            self._in_outage = True
            self._outage_started = time.monotonic()
            self.stats.outage_began()
        # One WARNING per disconnection: a connection that noticed its own
        # loss has already said so.
        log.log(logging.DEBUG if warned else logging.WARNING,
                'Database %s is unreachable (%s); waiting for it to come '
                'back.', self.config.describe(), message)

    def _wait(self, config: IDatabaseConfig,
              deadline: Optional[float]) -> Any:
        while True:
            probing = False
            try:
                with self._cond:
                    if not self._in_outage:
                        seen = None
                    elif self._prober is None:
                        self._prober = threading.current_thread()
                        probing = True
                    else:
                        seen = self._generation
                        self._cond.wait_for(
                            lambda: self._generation != seen or
                            self._prober is None, _remaining(deadline))
                if probing:
                    return self._probe(config, deadline)
            finally:
                if probing:
                    self._release_probe()
            if deadline is not None and time.monotonic() >= deadline:
                self._raise_unavailable(config)
            if seen is not None and self._in_outage:
                continue  # woken because the prober gave up: take its place
            try:
                return self._attempt(config)
            except psycopg2.Error as e:
                # The outage ended for the prober but not for us (too many
                # clients, say): back to waiting, without a stampede.
                self._begin_outage(server_message(e), warned=True)

    def _release_probe(self) -> None:
        # Whether the probe succeeded, gave up or was interrupted, the
        # slot is free and the waiters re-examine the outage.
        with self._cond:
            if self._prober is threading.current_thread():
                self._prober = None
                self._cond.notify_all()

    def _probe(self, config: IDatabaseConfig,
               deadline: Optional[float]) -> Any:
        backoff = Backoff(config.reconnect_initial_delay,
                          config.reconnect_max_delay)
        tries = 0
        while True:
            self._sleep_until(self._next_attempt_time(
                config, backoff.next_delay(), deadline))
            tries += 1
            self.outage_attempts += 1
            try:
                conn = self._attempt(config)
            except psycopg2.Error as e:
                log.debug('Reconnect attempt %d to %s failed: %s',
                          tries, self.config.describe(),
                          server_message(e))
                continue
            with self._cond:
                downtime = time.monotonic() - self._outage_started
                self.last_downtime = downtime
                self._last_success = time.monotonic()
                self._in_outage = False
                self.stats.outage_ended()
                self._generation += 1
                self._prober = None
                self._cond.notify_all()
            log.info('Reconnected to %s after %d attempts and %.3f s '
                     'of downtime.', self.config.describe(), tries,
                     downtime)
            return conn

    def _next_attempt_time(self, config: IDatabaseConfig, delay: float,
                           deadline: Optional[float]) -> float:
        """When the prober should try next: ``delay`` after the last
        attempt anyone made, or at the deadline.  A prober taking over from
        one that gave up continues the schedule instead of trying at once,
        and at its deadline it tries a last time only when nobody just did:
        waiters with deadlines close together add no attempts."""
        due = max(self._last_attempt + delay, time.monotonic())
        if deadline is None or due <= deadline:
            return due
        if deadline - self._last_attempt < config.reconnect_initial_delay:
            self._sleep_until(deadline)
            self._raise_unavailable(config)
        return deadline

    @staticmethod
    def _sleep_until(when: float) -> None:
        time.sleep(max(0.0, when - time.monotonic()))

    def _raise_unavailable(self, config: IDatabaseConfig) -> None:
        advice = _ADVICE.get(self.last_failure, _ADVICE[None])
        self.stats.unavailable += 1
        raise with_sqlstate(DatabaseUnavailableError(
            'Database %s still unavailable after %.1f s; giving up as '
            'reconnect_timeout says.  %s'
            % (config.describe(), config.reconnect_timeout or 0, advice)),
            self._last_sqlstate)


# The process's coordinator for a configuration's database.
coordinator_for: PerDatabase[ReconnectCoordinator] = PerDatabase(
    ReconnectCoordinator)
