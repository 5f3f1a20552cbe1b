"""Every documented way to run a unit works from every thread.

One generated test per idiom (idioms.py) x implicitBegin x where the unit
runs x what it writes with (raw SQL or a model), named
``test_<idiom>_<implicit|explicit>_<where>_<sql|model>``.  Each asserts,
by counting rows on a connection of its own, that every unit it ran
committed exactly once.  Where a unit runs:

main       the thread that called initZopeless()
thread     a new thread, whose first call into the library is made inside
           the transaction the idiom began through `transaction`
pool       one concurrent.futures worker reused for three units
reinstall  a pool worker, the test's thread, then the same worker again
           after uninstall() and a second initZopeless()
fork       a child forked from the installing thread
fault      a new thread, the unit's second statement cut off by the test
           proxy in the first attempt: the idioms that retry commit once;
           the others fail loudly, commit nothing, and a rerun commits

The sample database and the proxy are set up once for the layer: the
cases write rows of their own names and never need a fresh database.
"""

import concurrent.futures
import os
import threading
import unittest

import transaction
from transaction.interfaces import TransientError
from zope.testing.cleanup import cleanUp

from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.launchpad.scripts.ftests.forkwork import in_child
from canonical.launchpad.scripts.ftests.forkwork import result_of
from canonical.lp import initZopeless
from canonical.lp import installedTransactionManager
from canonical.testing.layers import DatabaseLayer
from canonical.testing.tcpproxy import TCPProxy
from idioms import IDIOMS
from idioms import RETRYING
from idioms import WRITERS
from idioms import ScriptFailed


class IdiomLayer(DatabaseLayer):
    """One sample database and one proxy in front of it for every case."""

    harness = proxy = admin = None

    @classmethod
    def setUp(cls):
        cls.harness = LaunchpadTestSetup()
        cls.harness.setUp()
        cls.admin = cls.harness.connect(autocommit=True)
        cls.proxy = TCPProxy(os.environ['PGHOST'], os.environ['PGPORT'])

    @classmethod
    def tearDown(cls):
        cls.proxy.close()
        cls.admin.close()
        cleanUp()
        cls.harness.tearDown()

    @classmethod
    def testTearDown(cls):
        # DatabaseLayer's runs too: cleanUp() uninstalls the case's manager.
        cls.proxy.disarm()


def in_thread(function, *args):
    """What ``function(*args)`` returned or raised, in a new thread."""
    outcome = []

    def run():
        try:
            outcome.append((True, function(*args)))
        except BaseException as e:  # handed to the test
            outcome.append((False, e))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def reported(function, *args):
    """Run in a forked child: None, or what went wrong, as text."""
    try:
        function(*args)
    except BaseException as e:
        return '%s: %s' % (type(e).__name__, e)
    return None


class IdiomMatrix(unittest.TestCase):

    layer = IdiomLayer
    idiom = implicit = writer = None  # set on each generated test

    def install(self):
        return initZopeless(
            dbhost='127.0.0.1 port=%d' % IdiomLayer.proxy.port,
            implicitBegin=self.implicit)

    def unit(self, name):
        """Run one unit writing the row ``name`` with this case's idiom."""
        ztm = installedTransactionManager()
        write = WRITERS[self.writer]
        IDIOMS[self.idiom](ztm, lambda: write(name))

    def names(self, where, count=1):
        base = '%s-%s-%s-%s' % (self.idiom, self.implicit, where,
                                self.writer)
        return [('%s-%d' % (base, i)).lower() for i in range(count)]

    def assertCommittedOnce(self, *names):
        cursor = IdiomLayer.admin.cursor()
        for name in names:
            cursor.execute('SELECT count(*), sum(karma) FROM person '
                           'WHERE name = %s', (name,))
            self.assertEqual(cursor.fetchone(), (1, 1), name)

    def assertNotCommitted(self, name):
        cursor = IdiomLayer.admin.cursor()
        cursor.execute('SELECT count(*) FROM person WHERE name = %s',
                       (name,))
        self.assertEqual(cursor.fetchone(), (0,), name)

    # -- where the unit runs ---------------------------------------------------

    def run_main(self):
        self.install()
        [name] = self.names('main')
        self.unit(name)
        self.assertCommittedOnce(name)

    def run_thread(self):
        self.install()
        [name] = self.names('thread')
        in_thread(self.unit, name)
        self.assertCommittedOnce(name)

    def run_pool(self):
        self.install()
        names = self.names('pool', 3)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            workers = [pool.submit(self.unit_in_worker, n).result()
                       for n in names]
        self.assertEqual(len(set(workers)), 1)  # one worker, reused
        self.assertCommittedOnce(*names)

    def unit_in_worker(self, name):
        self.unit(name)
        return threading.get_ident()

    def run_reinstall(self):
        before, main, after = self.names('reinstall', 3)
        ztm = self.install()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(self.unit_in_worker, before).result()
            ztm.uninstall()
            self.install()
            self.unit(main)
            second = pool.submit(self.unit_in_worker, after).result()
        self.assertEqual(first, second)
        self.assertCommittedOnce(before, main, after)

    def run_fork(self):
        self.install()
        [name] = self.names('fork')
        self.assertIsNone(result_of(*in_child(reported, self.unit, name)))
        self.assertCommittedOnce(name)

    def run_fault(self):
        self.install()
        [name] = self.names('fault')
        proxy = IdiomLayer.proxy
        sprung = proxy.sprung
        # The unit's UPDATE is dropped and its link cut: a transaction in
        # flight, which must be run again as a whole, never replayed.
        proxy.trap('UPDATE', forward=False)
        if self.idiom in RETRYING:
            in_thread(self.unit, name)
        else:
            with self.assertRaises((TransientError, ScriptFailed)) as caught:
                in_thread(self.unit, name)
            if isinstance(caught.exception, ScriptFailed):
                self.assertIn('DisconnectionError', str(caught.exception))
            self.assertNotCommitted(name)
            in_thread(self.unit, name)
        self.assertEqual(proxy.sprung, sprung + 1)
        self.assertCommittedOnce(name)

WHERE = ('main', 'thread', 'pool', 'reinstall', 'fork', 'fault')


def _make(idiom, implicit, where, writer):
    def test(self):
        self.idiom, self.implicit, self.writer = idiom, implicit, writer
        getattr(self, 'run_' + where)()
    test.__name__ = 'test_%s_%s_%s_%s' % (
        idiom, 'implicit' if implicit else 'explicit', where, writer)
    test.__doc__ = None
    return test


for _idiom in IDIOMS:
    for _implicit in (True, False):
        for _where in WHERE:
            for _writer in WRITERS:
                _test = _make(_idiom, _implicit, _where, _writer)
                setattr(IdiomMatrix, _test.__name__, _test)
del _idiom, _implicit, _where, _writer, _test


class TestWorkerThreadRetryIdiom(unittest.TestCase):
    """The reproduction of a worker thread that ran the README's retry
    idiom and recursed until RecursionError: its first call into the
    library, inside the transaction attempts() had begun, registered the
    library with `transaction`, which called back for that transaction
    before the thread was set up."""

    layer = IdiomLayer

    def test_attempts_in_a_worker_thread_with_explicit_begin(self):
        ztm = initZopeless(
            dbhost='127.0.0.1 port=%d' % IdiomLayer.proxy.port,
            implicitBegin=False)

        def unit():
            for attempt in transaction.manager.attempts(3):
                with attempt:
                    return ztm.connection().execute('select 1').fetchone()
        self.assertEqual(in_thread(unit), (1,))
