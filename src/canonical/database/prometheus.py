"""The statistics of each database as Prometheus metrics (the
``prometheus`` extra: ``pip install zopeless[prometheus]``).

::

    from prometheus_client import start_http_server
    from canonical.database.prometheus import register

    register()                  # into prometheus_client's default registry
    start_http_server(9187)     # or however the daemon serves /metrics

The collector reads IDatabaseStats when it is scraped: nothing is counted
twice and the transactions pay nothing for it.  Names follow Prometheus's
conventions: the prefix ``zopeless_``, seconds as the unit, counters ending
in ``_total``; every metric has the labels ``database`` (its name) and
``target`` (host, port, database and user: IDatabaseConfig.describe(),
never the password), and the counters by kind one label more.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

try:
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import REGISTRY
except ImportError as e:  # an extra of its own: say which
    raise ImportError(
        'canonical.database.prometheus needs prometheus_client, which the '
        'library does not install by itself: pip install '
        "'zopeless[prometheus]'.") from e
from canonical.database.stats import all_stats

__all__ = ['DatabaseStatsCollector', 'register', 'METRICS']

# (metric name without _total, IDatabaseStats attribute, kind label or None,
# help text).  A figure added to IDatabaseStats gets a row here.
METRICS: Tuple[Tuple[str, str, Optional[str], str], ...] = (
    ('zopeless_connections', 'connections', None,
     'Database connections made.'),
    ('zopeless_connect_failures', 'connect_failures', 'kind',
     'Failed connection attempts, by what they met.'),
    ('zopeless_connections_dropped', 'connections_dropped', None,
     'Connections given up: found dead, or on a server that would not '
     'take writes.'),
    ('zopeless_reconnects', 'reconnects', None,
     'Connections found lost and made again.'),
    ('zopeless_outages', 'outages', None,
     'Times the database was found unreachable.'),
    ('zopeless_outage_seconds', 'outage_seconds', None,
     'Seconds the database was unreachable, the outage in progress '
     'included.'),
    ('zopeless_unavailable', 'unavailable', None,
     'Waits for the database given up at reconnect_timeout.'),
    ('zopeless_units_committed', 'units_committed', None,
     'Units of work (transactions) committed.'),
    ('zopeless_units_rolled_back', 'units_rolled_back', None,
     'Units of work rolled back by the application.'),
    ('zopeless_units_failed', 'units_failed', 'kind',
     'Units of work ended by an error, by kind.'),
    ('zopeless_commit_outcomes_resolved', 'outcomes_resolved', 'outcome',
     'Commits whose answer was lost, settled after reconnecting, by '
     'outcome.'),
    ('zopeless_replays', 'replays', None,
     'First statements sent again on a new connection.'),
    ('zopeless_failovers', 'failovers', None,
     'New connections that reached another server than the one before.'),
    ('zopeless_hosts_skipped', 'hosts_skipped', 'reason',
     'Servers of the host list passed over when connecting, by reason.'),
)

_LABELS = ['database', 'target']


def _label(value: str) -> str:
    return value.replace(' ', '_')


class DatabaseStatsCollector:
    """A prometheus_client collector of the IDatabaseStats ``source()``
    returns (every database this process used, by default)."""

    def __init__(self, source: Callable[[], Iterable[Any]] = all_stats
                 ) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        stats: List[Any] = list(self._source())
        in_outage = GaugeMetricFamily(
            'zopeless_in_outage',
            '1 while the database is found unreachable, else 0.',
            labels=_LABELS)
        for s in stats:
            in_outage.add_metric([s.database, s.target], int(s.in_outage))
        yield in_outage
        for name, attribute, kind, text in METRICS:
            family = CounterMetricFamily(
                name, text, labels=_LABELS + ([kind] if kind else []))
            for s in stats:
                labels = [s.database, s.target]
                value = getattr(s, attribute)
                if kind is None:
                    family.add_metric(labels, value)
                    continue
                for key, count in sorted(value.items()):
                    family.add_metric(labels + [_label(key)], count)
            yield family


def register(registry: Any = REGISTRY) -> DatabaseStatsCollector:
    """Register a DatabaseStatsCollector of every database with
    ``registry`` (prometheus_client's default one unless told); return
    it, for ``registry.unregister()``."""
    collector = DatabaseStatsCollector()
    registry.register(collector)
    return collector
