"""The reference of docs/ against the code, in the test suite too.

``make docs`` fails when the settings reference and the code disagree; so
does this test, with the same functions (docs/_ext/zopeless_codefacts.py),
for whoever changes a setting and runs only the tests.  And the functions
themselves: the scan finds every way the code reads the environment, and
the settings they report are the code's.
"""

import importlib.util
import inspect
import os
import shutil
import tempfile
import unittest

from zope.schema import getFieldsInOrder

from canonical.database import config
from canonical.database.zcml import IDatabaseDirective
from canonical.lp import initZopeless

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Loaded from its file: docs/_ext stays off sys.path (and off the
# PYTHONPATH of the processes tests start).
_spec = importlib.util.spec_from_file_location(
    'zopeless_codefacts',
    os.path.join(ROOT, 'docs', '_ext', 'zopeless_codefacts.py'))
facts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(facts)

SETTINGS_PAGE = os.path.join(ROOT, 'docs', 'settings.rst')

# What docs/conf.py scans and lets the page add (read by libpq or by the
# shell scripts, not by Python code).
ENVVAR_PATHS = ['src/canonical', 'scripts', 'benchmarks', 'chaos']
READ_ELSEWHERE = {'PGDATABASE', 'PGPASSWORD', 'PYTHON'}


def settings_page():
    with open(SETTINGS_PAGE, encoding='utf-8') as f:
        return f.read()


class EnvironmentScanTests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='zopeless-docs-')

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def scan(self, source):
        path = os.path.join(self.tmp, 'module.py')
        with open(path, 'w') as f:
            f.write(source)
        return sorted(facts.environment_variables([self.tmp]))

    def test_every_way_of_reading_the_environment_is_found(self):
        self.assertEqual(self.scan(
            "import os\n"
            "NAME_ENV = 'FROM_A_CONSTANT'\n"
            "os.environ.get('WITH_GET')\n"
            "os.environ['BY_INDEX']\n"
            "os.getenv('WITH_GETENV')\n"
            "os.environ.get(NAME_ENV)\n"
            "def f(env, environ):\n"
            "    return env.get('FROM_ENV'), environ.get('FROM_ENVIRON')\n"
            "os.environ.get('PREFIX_' + version)\n"),
            ['BY_INDEX', 'FROM_A_CONSTANT', 'FROM_ENV', 'FROM_ENVIRON',
             'PREFIX_X', 'WITH_GET', 'WITH_GETENV'])

    def test_setting_a_variable_is_not_reading_it(self):
        self.assertEqual(self.scan(
            "import os\n"
            "os.environ['SET_HERE'] = '1'\n"
            "settings = {}\n"
            "settings.get('NOT_THE_ENVIRONMENT')\n"), [])


class CodeSettingsTests(unittest.TestCase):

    def test_initzopeless_settings_are_every_keyword_it_takes(self):
        settings = facts.code_settings('initZopeless')
        keywords = set(inspect.signature(initZopeless).parameters) | set(
            inspect.signature(config.DatabaseConfig).parameters) | set(
            config._BEHAVIOUR_DEFAULTS)
        keywords -= {'options', 'settings'}      # the ** parameters
        self.assertEqual(set(settings), keywords)
        self.assertEqual(settings['implicitBegin'], ('bool', True))
        self.assertEqual(settings['dbhost'], ('str or None', None))
        self.assertEqual(settings['reconnect_max_delay'], (None, 0.05))

    def test_zcml_settings_are_the_directive_schema(self):
        settings = facts.code_settings('zcml')
        self.assertEqual(list(settings),
                         [n for n, _ in getFieldsInOrder(IDatabaseDirective)])
        self.assertEqual(settings['implicitBegin'], ('boolean', True))

    def test_script_options_are_a_scripts_options(self):
        settings = facts.code_settings('options')
        self.assertEqual(settings['--dry-run'], ('flag', False))
        self.assertEqual(settings['-v, --verbose'], ('repeatable flag', 0))
        self.assertEqual(settings['--log-file'], ('LEVEL:PATH', []))
        self.assertIn('--dbhost', settings)


class SettingsPageTests(unittest.TestCase):
    """What the build checks, checked by the suite as well."""

    def test_every_initzopeless_setting_is_documented(self):
        self.assertEqual(
            sorted(facts.documented_settings(settings_page(),
                                             'initZopeless')),
            sorted(facts.code_settings('initZopeless')))

    def test_every_environment_variable_is_documented(self):
        read = set(facts.environment_variables(
            [os.path.join(ROOT, p) for p in ENVVAR_PATHS]))
        documented = set(facts.documented_envvars(settings_page()))
        self.assertEqual(sorted(read - documented), [])
        self.assertEqual(sorted(documented - read - READ_ELSEWHERE), [])

    def test_the_reader_of_the_page_sees_its_tables(self):
        text = ('.. settings-table:: initZopeless\n\n'
                '   dbname\n      The name.\n'
                '   reconnect_timeout : float or None\n      Seconds.\n\n'
                'After.\n')
        self.assertEqual(facts.documented_settings(text, 'initZopeless'),
                         ['dbname', 'reconnect_timeout'])
