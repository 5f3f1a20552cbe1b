"""Bad input fails fast and clearly; secrets never leak.

Property-based tests round-trip hostile text through the models and build
connection settings from arbitrary strings; a canary password is looked for
in every message, repr, log record and chained traceback.
"""

import logging
import traceback
import unittest
import warnings

import psycopg2.extensions
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject
from zope.testing.cleanup import CleanUp

from canonical.database.config import DatabaseConfig
from canonical.testing.logcapture import LogCapture
from canonical.database.interfaces import ConfigurationError
from canonical.database.interfaces import ConnectionFailedError
from canonical.database.interfaces import DatabaseUnavailableError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import InvalidValueError
from canonical.testing.proxy import free_port
from canonical.launchpad.database import Person
from canonical.lp import initZopeless
from canonical.lp import isZopeless
from canonical.testing.layers import LaunchpadLayer

CANARY = 'canary-secret-9'  # the password of the zopeless_pw test role

# Text PostgreSQL stores exactly: no NUL, no lone surrogates.
storable = st.text(st.characters(blacklist_categories=('Cs',),
                                 blacklist_characters='\x00'),
                   max_size=300)


class TestHostileValues(unittest.TestCase):

    layer = LaunchpadLayer

    def setUp(self):
        self.ztm = initZopeless(implicitBegin=False)

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(value=storable)
    def test_text_round_trips_exactly(self, value):
        self.ztm.begin()
        person = Person(name='hostile', displayname=value, givenname=value)
        pid = person.id
        self.ztm.commit()
        self.ztm.begin()
        stored = Person.get(pid)
        self.assertEqual(stored.displayname, value)
        self.assertEqual(stored.givenname, value)
        # The same value as a query argument finds the row again.
        self.assertEqual(Person.selectBy(displayname=value).count(), 1)
        Person.delete(pid)
        self.ztm.commit()

    @settings(max_examples=30, deadline=None)
    @given(prefix=storable, bad=st.sampled_from(['\x00', '\ud800', '\udfff']),
           suffix=storable)
    def test_unstorable_text_is_refused_before_any_sql(self, prefix, bad,
                                                       suffix):
        self.ztm.begin()
        try:
            with self.assertRaises(InvalidValueError) as caught:
                Person(name='refused', displayname=prefix + bad + suffix)
            self.assertIn('Person.displayname', str(caught.exception))
            with self.assertRaises(InvalidValueError):
                Person.get(1).displayname = prefix + bad + suffix
            # Nothing half done: the transaction still works.
            self.assertEqual(Person.get(1).name, 'sabdfl')
        finally:
            self.ztm.abort()

    def test_very_long_value(self):
        self.ztm.begin()
        value = "'\\" * 500000
        pid = Person(name='long', displayname=value).id
        self.ztm.commit()
        self.ztm.begin()
        self.assertEqual(Person.get(pid).displayname, value)
        self.ztm.abort()

    def test_check_constraint_violation_is_an_integrity_error(self):
        from sqlobject.dberrors import IntegrityError
        self.ztm.begin()
        self.assertRaises(IntegrityError, Person, name="Robert'); --")
        self.ztm.abort()


class TestConnectionSettings(CleanUp, unittest.TestCase):

    @settings(max_examples=200, deadline=None)
    @given(dbname=st.text(st.characters(blacklist_characters='\x00',
                                        blacklist_categories=('Cs',)),
                          min_size=1, max_size=40),
           user=st.text(st.characters(blacklist_characters='\x00',
                                      blacklist_categories=('Cs',)),
                        min_size=1, max_size=40))
    def test_names_never_turn_into_keywords(self, dbname, user):
        config = DatabaseConfig(dbname=dbname, dbuser=user, dbhost='h',
                                environ={})
        params = config.connect_kwargs()
        dsn = psycopg2.extensions.make_dsn(**params)
        parsed = psycopg2.extensions.parse_dsn(dsn)
        self.assertEqual(parsed['dbname'], dbname)
        self.assertEqual(parsed['user'], user)
        self.assertEqual(parsed['host'], 'h')
        self.assertEqual(set(parsed), set(params))

    def test_dbhost_may_not_smuggle_owned_keywords(self):
        for extra in ('dbname=other', 'user=postgres', 'password=x'):
            with self.assertRaises(ConfigurationError) as caught:
                DatabaseConfig(dbhost='localhost ' + extra)
            self.assertIn('dbhost may not set', str(caught.exception))

    def test_security_parameters_pass_through_unchanged(self):
        config = DatabaseConfig(
            dbhost='db.example sslmode=verify-full sslrootcert=/etc/ca.pem',
            environ={})
        params = config.connect_kwargs()
        self.assertEqual(params['sslmode'], 'verify-full')
        self.assertEqual(params['sslrootcert'], '/etc/ca.pem')

    def test_bad_settings_fail_fast_and_install_nothing(self):
        bad = [dict(dsn='host=localhost port'),
               dict(dsn='host=x bogus=1'),
               dict(dbhost='localhost port'),
               dict(isolation='chaos'),
               dict(reconnect_timeout=-1)]
        for arguments in bad:
            self.assertRaises(ConfigurationError, initZopeless, **arguments)
            self.assertFalse(isZopeless())

    def test_malformed_dsn_never_echoes_the_password(self):
        for dsn in ('host=a password=%s port' % CANARY,
                    'postgresql://u:%s@h/db?oops' % CANARY,
                    "host=a password='%s' bogus=1" % CANARY):
            with self.assertRaises(ConfigurationError) as caught:
                DatabaseConfig(dsn=dsn)
            self.assertNotIn(CANARY, everything_about(caught.exception))

    def test_config_provides_its_interface(self):
        self.assertTrue(verifyObject(IDatabaseConfig, DatabaseConfig()))


def everything_about(error):
    """Message, repr and the whole chained traceback of ``error``."""
    return '\n'.join([str(error), repr(error)] +
                     traceback.format_exception(type(error), error,
                                                error.__traceback__))


class TestPasswordNeverLeaks(unittest.TestCase):

    layer = LaunchpadLayer

    def setUp(self):
        self.log = LogCapture('', level=logging.DEBUG)
        self.addCleanup(self.log.uninstall)
        self.caught_warnings = warnings.catch_warnings(record=True)
        self.warned = self.caught_warnings.__enter__()
        warnings.simplefilter('always')
        self.addCleanup(self.caught_warnings.__exit__, None, None, None)

    def assertNoCanary(self, *texts):
        texts = list(texts) + self.log.lines() + \
            [str(w.message) for w in self.warned]
        for text in texts:
            self.assertNotIn(CANARY, text)

    def test_wrong_password(self):
        ztm = initZopeless(implicitBegin=False, dbuser='zopeless_pw',
                           password=CANARY + 'x')
        with self.assertRaises(ConnectionFailedError) as caught:
            ztm.begin()
        self.assertIn('password authentication failed', str(caught.exception))
        self.assertNoCanary(everything_about(caught.exception), repr(ztm),
                            repr(ztm.config), str(ztm.config.settings_key()))

    def test_right_password_then_outage(self):
        ztm = initZopeless(implicitBegin=False, dbuser='zopeless_pw',
                           password=CANARY)
        ztm.begin()
        self.assertEqual(
            ztm.connection().execute('SELECT current_user').fetchone(),
            ('zopeless_pw',))
        self.assertNotIn(CANARY, ztm.connection().raw.dsn)
        ztm.abort()
        ztm.uninstall()
        # The same settings against a port where nothing listens.
        ztm = initZopeless(implicitBegin=False, dbuser='zopeless_pw',
                           password=CANARY, reconnect_timeout=0.2,
                           dbhost='127.0.0.1 port=%d' % free_port())
        with self.assertRaises(DatabaseUnavailableError) as caught:
            ztm.begin()
        again = initZopeless  # a second call warns about the same settings
        self.assertIs(again(implicitBegin=False, dbuser='zopeless_pw',
                            password=CANARY, reconnect_timeout=0.2,
                            dbhost=ztm.config.get('host') + ' port=' +
                            ztm.config.get('port')), ztm)
        self.assertTrue(self.warned)
        self.assertNoCanary(everything_about(caught.exception), repr(ztm))
