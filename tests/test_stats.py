"""The statistics of each database, counted by the library as real units
of work commit, fail and reconnect through the test proxy; the Prometheus
collector's output scraped over HTTP and parsed by prometheus_client's own
parser; a cron run's textfile for node_exporter, parsed the same way."""

import os
import shutil
import tempfile
import threading
import types
import unittest
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client import make_wsgi_app
from prometheus_client.parser import text_string_to_metric_families
from sqlobject import dberrors
from zope.interface.verify import verifyObject

from canonical.database.config import DatabaseConfig
from canonical.database.interfaces import CommitOutcomeUnknownError
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import DisconnectionError
from canonical.database.interfaces import IDatabaseStats
from canonical.database.interfaces import IDatabaseStatsProvider
from canonical.database.interfaces import IMeasuredConnection
from canonical.database.interfaces import ReadOnlyServerError
from canonical.database.interfaces import TransactionAbortedError
from canonical.database.interfaces import TransactionLostError
from canonical.database.prometheus import DatabaseStatsCollector
from canonical.database.prometheus import register
from canonical.database.stats import DatabaseStats
from canonical.database.stats import all_stats
from canonical.database.stats import failure_kind
from canonical.database.stats import get_stats
from canonical.launchpad.database import Person
from canonical.launchpad.scripts import LaunchpadCronScript
from canonical.launchpad.scripts.textfile import METRICS_DIR_ENV
from canonical.launchpad.scripts.textfile import write_run
from canonical.lp import initZopeless
from canonical.testing.tcpproxy import TCPProxy
from canonical.testing.waiting import wait_for
from test_units import DatabaseTestCase


def parse(text):
    """{(sample name, frozenset of labels): value} of exposition text."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples}


class TestStatsObject(unittest.TestCase):

    def stats(self):
        return DatabaseStats(DatabaseConfig(dbname='shop', dbuser='u',
                                            password='secret'))

    def test_contract_and_snapshot(self):
        stats = self.stats()
        self.assertTrue(verifyObject(IDatabaseStats, stats))
        self.assertEqual(stats.database, 'shop')
        self.assertNotIn('secret', stats.target + repr(stats))
        figures = stats.get_stats()
        self.assertEqual(figures['units_committed'], 0)
        self.assertEqual(figures['units_failed'], {})
        self.assertFalse(figures['in_outage'])
        stats.units_failed['disconnection'] = 1
        self.assertEqual(figures['units_failed'], {})  # a copy

    def test_pop_stats_gives_the_increase_and_keeps_the_counters(self):
        stats = self.stats()
        stats.units_committed += 3
        stats.unit_ended('conflict')
        first = stats.pop_stats()
        self.assertEqual((first['units_committed'], first['units_failed']),
                         (3, {'conflict': 1}))
        stats.units_committed += 2
        stats.unit_ended(None)
        second = stats.pop_stats()
        self.assertEqual((second['units_committed'],
                          second['units_rolled_back'],
                          second['units_failed']), (2, 1, {}))
        self.assertEqual(stats.units_committed, 5)  # never reset

    def test_outage_seconds_include_the_outage_in_progress(self):
        stats = self.stats()
        stats.outage_began()
        self.assertTrue(stats.in_outage)
        wait_for(lambda: stats.outage_seconds > 0, 5, 'time to pass')
        stats.outage_ended()
        total = stats.outage_seconds
        self.assertFalse(stats.in_outage)
        self.assertEqual(stats.outage_seconds, total)  # no longer grows
        self.assertEqual(stats.outages, 1)

    def test_failovers_are_a_new_system_timeline_or_host(self):
        stats = self.stats()

        def connect(system, timeline, host):
            server = None if system is None else types.SimpleNamespace(
                system=system, timeline=timeline)
            stats.note_server(types.SimpleNamespace(server=server,
                                                    host_label=host))
        connect('A', 1, 'h1:5432')
        connect('A', 1, 'h1:5432')
        self.assertEqual(stats.failovers, 0)
        connect('A', 2, 'h1:5432')      # promoted behind the same address
        connect('A', 2, 'h2:5432')      # another entry of the host list
        connect('B', 1, 'h2:5432')      # another system
        self.assertEqual(stats.failovers, 3)
        connect(None, None, 'h2:5432')  # a reader, not asked: no change
        self.assertEqual(stats.failovers, 3)

    def test_failure_kinds(self):
        serialization = dberrors.OperationalError('x')
        serialization.pgcode = '40001'
        cases = [(DisconnectionError('x'), 'disconnection'),
                 (ReadOnlyServerError('x'), 'read_only'),
                 (CommitOutcomeUnknownError('x'), 'outcome_unknown'),
                 (TransactionLostError('x'), 'lost'),
                 (TransactionAbortedError('x'), 'aborted'),
                 (serialization, 'conflict'),
                 (dberrors.ProgrammingError('x'), 'error')]
        for error, kind in cases:
            self.assertEqual(failure_kind(error), kind)


class CountingTestCase(DatabaseTestCase):
    """A transaction manager that reaches the server through the proxy."""

    def setUp(self):
        self.proxy = TCPProxy(os.environ['PGHOST'], os.environ['PGPORT'])
        self.addCleanup(self.proxy.close)
        self.ztm = initZopeless(
            dbhost='127.0.0.1 port=%d' % self.proxy.port,
            implicitBegin=False, reconnect_initial_delay=0.01,
            reconnect_max_delay=0.05)
        self.stats = self.ztm.stats()

    def unit(self, karma):
        self.ztm.begin()
        Person.get(1).karma = karma
        self.ztm.commit()


class TestCounting(CountingTestCase):

    def test_the_stats_of_the_installed_database(self):
        self.assertTrue(verifyObject(IDatabaseStatsProvider, self.ztm))
        self.assertIs(get_stats(), self.stats)
        self.assertIs(get_stats('launchpad_ftest'), self.stats)
        self.assertIn(self.stats, all_stats())
        self.assertRaises(LookupError, get_stats, 'no_such_database')
        self.ztm.begin()
        self.assertTrue(verifyObject(IMeasuredConnection,
                                     self.ztm.connection()))
        self.ztm.abort()

    def test_units_committed_rolled_back_and_failed(self):
        self.unit(200)
        self.unit(201)
        self.ztm.begin()
        Person.get(1)
        self.ztm.abort()
        self.ztm.begin()
        self.assertRaises(dberrors.ProgrammingError,
                          self.ztm.connection().execute, 'SELEC 1')
        self.ztm.abort()
        self.ztm.begin()
        Person.get(1)
        self.proxy.cut()
        self.assertRaises(DisconnectionError, Person.get, 2)
        self.ztm.abort()
        figures = self.stats.get_stats()
        self.assertEqual(figures['units_committed'], 2)
        self.assertEqual(figures['units_rolled_back'], 1)
        self.assertEqual(figures['units_failed'],
                         {'error': 1, 'disconnection': 1})

    def test_a_reconnect_and_a_replay(self):
        self.unit(300)
        self.assertEqual((self.stats.connections, self.stats.reconnects),
                         (1, 0))
        self.proxy.cut()
        self.proxy.wait(lambda p: p.open_links == 0, what='the cut')
        self.unit(301)  # begin() or the first statement makes it again
        replays = self.stats.replays
        self.ztm.begin()
        self.proxy.cut()
        self.proxy.wait(lambda p: p.open_links == 0, what='the cut')
        # Cut after begin() looked: the first statement finds the link
        # dead and is sent again on a new connection.
        Person.get(1).karma = 302
        self.ztm.commit()
        self.assertEqual(self.stats.replays, replays + 1)
        figures = self.stats.get_stats()
        self.assertEqual(figures['units_committed'], 3)
        self.assertEqual(figures['connections'], 3)
        self.assertEqual(figures['reconnects'], 2)
        self.assertEqual(figures['connections_dropped'], 2)
        self.assertEqual(figures['units_failed'], {})

    def test_commit_outcome_unknown(self):
        self.ztm.begin()
        Person.get(1).karma = 400
        self.proxy.trap('COMMIT', forward=False)
        self.assertRaises(CommitOutcomeUnknownError, self.ztm.commit)
        self.ztm.abort()
        self.assertEqual(self.stats.units_failed, {'outcome_unknown': 1})
        self.assertEqual(self.stats.units_committed, 0)

    def test_an_outage_given_up_then_over(self):
        self.unit(500)
        self.ztm.uninstall()
        self.ztm = initZopeless(
            dbhost='127.0.0.1 port=%d' % self.proxy.port,
            implicitBegin=False, reconnect_timeout=0.3,
            reconnect_initial_delay=0.01, reconnect_max_delay=0.05)
        self.proxy.refuse()
        self.proxy.cut()
        self.assertRaises(DatabaseUnavailableError, self.ztm.begin)
        self.assertTrue(self.stats.in_outage)
        self.assertEqual((self.stats.outages, self.stats.unavailable), (1, 1))
        self.assertGreater(sum(self.stats.connect_failures.values()), 0)
        self.proxy.admit()
        self.unit(501)
        self.assertFalse(self.stats.in_outage)
        self.assertGreaterEqual(self.stats.outage_seconds, 0.3)


class TestPrometheus(CountingTestCase):

    def scrape(self, registry):
        """The registry's metrics over a real HTTP scrape on loopback."""
        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass
        server = make_server('127.0.0.1', 0, make_wsgi_app(registry),
                             handler_class=Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = 'http://127.0.0.1:%d/metrics' % server.server_port
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode('utf-8')
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)

    def test_a_scrape_after_real_units_and_a_reconnect(self):
        registry = CollectorRegistry()
        collector = register(registry)
        self.assertIsInstance(collector, DatabaseStatsCollector)
        self.unit(600)
        self.proxy.cut()
        self.unit(601)
        self.ztm.begin()
        Person.get(1)
        self.proxy.cut()
        self.assertRaises(DisconnectionError, Person.get, 2)
        self.ztm.abort()
        samples = parse(self.scrape(registry))
        labels = {('database', 'launchpad_ftest'),
                  ('target', self.stats.target)}

        def value(name, **more):
            return samples[(name, frozenset(labels | set(more.items())))]
        self.assertEqual(value('zopeless_units_committed_total'), 2)
        self.assertEqual(value('zopeless_units_failed_total',
                               kind='disconnection'), 1)
        self.assertEqual(value('zopeless_reconnects_total'), 1)
        self.assertEqual(value('zopeless_connections_total'), 2)
        self.assertEqual(value('zopeless_connections_dropped_total'), 2)
        self.assertEqual(value('zopeless_in_outage'), 0)
        self.assertEqual(value('zopeless_outage_seconds_total'), 0)
        self.assertNotIn('password', self.stats.target)
        # The same text as the library's exposition, parsed alike.
        self.assertEqual(parse(generate_latest(registry).decode()), samples)

    def test_every_counter_follows_the_naming_conventions(self):
        registry = CollectorRegistry()
        register(registry)
        self.unit(700)
        for family in text_string_to_metric_families(
                generate_latest(registry).decode()):
            self.assertTrue(family.name.startswith('zopeless_'))
            if family.type == 'counter':
                for sample in family.samples:
                    self.assertTrue(sample.name.endswith(
                        ('_total', '_created')), sample.name)


class MeteredScript(LaunchpadCronScript):
    """Commits ``units`` karma awards and counts them as items."""

    def __init__(self, *args, units=2, fail=False, **kw):
        self.units, self.fail = units, fail
        super().__init__(*args, **kw)

    def main(self):
        for i in range(self.units):
            self.txn.begin()
            Person.get(1).karma = 800 + i
            self.txn.commit()
        self.items_processed = self.units
        if self.fail:
            raise KeyError('this run fails')


class TestCronTextfile(DatabaseTestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='zopeless-prom-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        os.environ['ZOPELESS_LOCK_DIR'] = self.tmp
        self.addCleanup(os.environ.pop, 'ZOPELESS_LOCK_DIR', None)

    def run_script(self, *args, **kw):
        script = MeteredScript('metered', test_args=list(args), **kw)
        script.log_stream = open(os.devnull, 'w')
        self.addCleanup(script.log_stream.close)
        return script, script.run_with_status(implicitBegin=False)

    def samples(self, script):
        with open(script.metrics_file, encoding='utf-8') as f:
            found = parse(f.read())
        return {name: value for (name, labels), value in found.items()
                if dict(labels) == {'script': 'metered'}}

    def test_a_real_run_then_a_failed_one(self):
        script, status = self.run_script('--metrics-dir', self.tmp)
        self.assertEqual(status, 0)
        self.assertEqual(script.metrics_file,
                         os.path.join(self.tmp, 'metered.prom'))
        first = self.samples(script)
        self.assertEqual(first['zopeless_cron_last_run_exit_status'], 0)
        self.assertEqual(first['zopeless_cron_last_run_items'], 2)
        self.assertGreater(first['zopeless_cron_last_run_duration_seconds'],
                           0)
        self.assertEqual(
            first['zopeless_cron_last_success_timestamp_seconds'],
            first['zopeless_cron_last_run_timestamp_seconds'])
        os.environ[METRICS_DIR_ENV] = self.tmp
        self.addCleanup(os.environ.pop, METRICS_DIR_ENV, None)
        script, status = self.run_script(units=1, fail=True)
        self.assertEqual(status, 1)
        second = self.samples(script)
        self.assertEqual(second['zopeless_cron_last_run_exit_status'], 1)
        self.assertEqual(second['zopeless_cron_last_run_items'], 1)
        # The last success is still the first run's.
        self.assertEqual(
            second['zopeless_cron_last_success_timestamp_seconds'],
            first['zopeless_cron_last_success_timestamp_seconds'])
        self.assertGreaterEqual(
            second['zopeless_cron_last_run_timestamp_seconds'],
            first['zopeless_cron_last_run_timestamp_seconds'])
        # Only the lock file and the metrics file: no temporary left over.
        self.assertEqual([n for n in os.listdir(self.tmp)
                          if not n.endswith('.lock')], ['metered.prom'])

    def test_no_directory_no_file_and_a_bad_one_is_only_logged(self):
        script, status = self.run_script()
        self.assertIsNone(script.metrics_file)
        self.assertEqual(status, 0)
        missing = os.path.join(self.tmp, 'missing')
        script, status = self.run_script('--metrics-dir', missing)
        self.assertEqual(status, 0)
        self.assertFalse(os.path.exists(missing))

    def test_the_file_is_replaced_whole(self):
        path = os.path.join(self.tmp, 'job.prom')
        write_run(path, 'job', 0, 1.5, None, ended=1000.0)
        write_run(path, 'job', 2, 0.5, 7, ended=2000.0)
        with open(path, encoding='utf-8') as f:
            samples = parse(f.read())
        job = frozenset({('script', 'job')})
        self.assertEqual(samples[('zopeless_cron_last_run_exit_status', job)],
                         2)
        self.assertEqual(samples[
            ('zopeless_cron_last_success_timestamp_seconds', job)], 1000.0)
        self.assertEqual(samples[('zopeless_cron_last_run_items', job)], 7)
