"""Smoke test of an installed zopeless, as a user's script would use it.

scripts/smoke.sh runs it with the interpreter of a fresh virtualenv holding
the wheel, from a temporary directory outside the checkout, with PGHOST,
PGPORT and PGUSER naming a server on which PGUSER may create databases.
It makes its own database and table, uses them through initZopeless() in
explicit-begin mode, once with raw SQL and once with a model declared
here, checks what was committed with a separate connection, and drops the
database again.  Exit status 0 when every check passes.
"""

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

import psycopg2
from psycopg2 import sql
from sqlobject import StringCol

import canonical.lp
from canonical.database.sqlbase import SQLBase
from canonical.lp import initZopeless
from canonical.lp import site_zcml_path
from canonical.lp.version import __version__

DBNAME = 'zopeless_smoke'

# The test kit, whose extra needs are the test extra (not installed here),
# and the library's two compat shims that lead to it (importing
# canonical.database.cluster.__main__ runs the cluster's command line).
TEST_KIT = ('canonical.testing.cluster', 'canonical.database.ftests',
            'canonical.database.cluster', 'canonical.launchpad.ftests',
            'canonical.testing')
TEST_EXTRA = ('zope.testrunner', 'zope.testing', 'hypothesis', 'twisted')
# Modules of an optional extra (setup.py's extras_require), by extra:
# without it they must say what to install.
EXTRA_MODULES = {'canonical.database.prometheus': 'prometheus'}


class SmokeItem(SQLBase):
    """A model of the user's own, on a table of the user's own."""

    class sqlmeta:
        table = 'smoke_item'

    name = StringCol(notNull=True)


def check(ok, what):
    if not ok:
        print('smoke: FAILED: %s' % what, file=sys.stderr)
        sys.exit(1)
    print('smoke: ok  %s' % what)


def admin(dbname='postgres'):
    conn = psycopg2.connect(dbname=dbname)
    conn.autocommit = True
    return conn


def create_database():
    conn = admin()
    with conn.cursor() as cur:
        cur.execute(sql.SQL('DROP DATABASE IF EXISTS {}').format(
            sql.Identifier(DBNAME)))
        cur.execute(sql.SQL('CREATE DATABASE {}').format(
            sql.Identifier(DBNAME)))
    conn.close()
    conn = admin(DBNAME)
    with conn.cursor() as cur:
        cur.execute('CREATE TABLE smoke_item '
                    '(id serial PRIMARY KEY, name text NOT NULL)')
    conn.close()


def drop_database():
    conn = admin()
    with conn.cursor() as cur:
        cur.execute(sql.SQL('DROP DATABASE IF EXISTS {}').format(
            sql.Identifier(DBNAME)))
    conn.close()


def committed_names():
    conn = admin(DBNAME)
    with conn.cursor() as cur:
        cur.execute('SELECT name FROM smoke_item ORDER BY name')
        names = [row[0] for row in cur.fetchall()]
    conn.close()
    return names


def check_installed_copy():
    package = os.path.dirname(os.path.abspath(canonical.lp.__file__))
    check(package.startswith(sys.prefix + os.sep),
          'canonical.lp comes from the virtualenv (%s)' % package)
    check(site_zcml_path() == os.path.join(package, 'script.zcml'),
          'the site ZCML is the package\'s own (%s)' % site_zcml_path())
    installed = importlib.metadata.version('zopeless')
    check(installed == __version__,
          'version %s, as the distribution says' % installed)


def check_runtime_dependencies():
    missing = [name for name in TEST_EXTRA
               if importlib.util.find_spec(name) is None]
    check(missing == list(TEST_EXTRA),
          'the test extra is not installed (%s)' % ', '.join(TEST_EXTRA))
    import canonical
    names = [info.name for info in pkgutil.walk_packages(
        canonical.__path__, 'canonical.')
        if not info.name.startswith(TEST_KIT)]
    for name in names:
        if name not in EXTRA_MODULES:
            importlib.import_module(name)
    check(len(names) > 20, 'the %d modules of the library import with the '
          'runtime dependencies alone' % len(names))
    for name, extra in sorted(EXTRA_MODULES.items()):
        try:
            importlib.import_module(name)
        except ImportError as e:
            said = str(e)
        else:
            said = ''
        check("zopeless[%s]" % extra in said,
              '%s, without its extra, says to install zopeless[%s]'
              % (name, extra))


def run():
    ztm = initZopeless(dbname=DBNAME, implicitBegin=False)
    ztm.begin()
    ztm.connection().execute(
        "INSERT INTO smoke_item (name) VALUES ('raw sql')")
    count = ztm.connection().execute(
        'SELECT count(*) FROM smoke_item').fetchone()[0]
    ztm.commit()
    check(count == 1, 'raw SQL through ztm.connection() in begin()/commit()')

    ztm.begin()
    SmokeItem(name='model')
    ztm.commit()
    ztm.begin()
    names = sorted(item.name for item in SmokeItem.select())
    ztm.commit()
    check(names == ['model', 'raw sql'],
          'a model of the script\'s own through SQLBase: %s' % names)
    ztm.uninstall()
    check(committed_names() == ['model', 'raw sql'],
          'both rows committed, as a separate connection sees')


def main():
    check_installed_copy()
    check_runtime_dependencies()
    create_database()
    try:
        run()
    finally:
        drop_database()
    print('smoke: passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
