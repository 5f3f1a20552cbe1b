"""Sphinx configuration of the Zopeless documentation (``make docs``)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The library from this checkout, and the extension that generates and
# checks the reference (_ext/zopeless_reference.py).
sys.path[:0] = [os.path.join(ROOT, 'src'), os.path.join(HERE, '_ext')]

from canonical.lp.version import __version__  # noqa: E402

project = 'Zopeless'
author = 'The Zopeless developers'
copyright = 'Canonical Ltd. and the Zopeless developers'
release = __version__
version = '.'.join(__version__.split('.')[:2])

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.doctest',
    'repoze.sphinx.autointerface',
    'zopeless_reference',
]

exclude_patterns = ['_build']
# The narrative doctests are included from tests/ (one source, which the
# test suite runs); they are not pages of their own.
source_suffix = {'.rst': 'restructuredtext'}
nitpicky = True
# Types from other libraries: no inventory of theirs is fetched (the build
# reaches no site but the package index), so references to them stay text.
nitpick_ignore_regex = [
    (r'py:.*', r'(typing|typing_extensions|collections\.abc|abc)\..*'),
    (r'py:.*', r'(psycopg2|sqlobject|transaction|zope|twisted|optparse|'
               r'logging|threading|socket|subprocess|types|io|enum|'
               r'configparser|hypothesis|unittest|weakref|select|os|'
               r'random)\b.*'),
    # Type variables, and the savepoint class only its data manager makes.
    (r'py:(class|obj)', r'canonical\..*\.(T|E)'),
    (r'py:class', r'canonical\.database\.datamanager\.ZopelessSavepoint'),
    (r'py:class', r'(Any|Callable|Dict|List|Optional|Tuple|Iterator|'
                  r'Iterable|Mapping|Sequence|Set|Type|TypeVar|Union|'
                  r'Generic|IO|TextIO|T|None|NoneType|object|str|int|'
                  r'float|bool|bytes|dict|list|tuple|set|frozenset|type|'
                  r'Exception|BaseException|ValueError|RuntimeError|'
                  r'OSError|KeyError|AttributeError|TimeoutError|'
                  r'FrameType|TracebackType|module|function|'
                  r'RawConnection|Cursor|Connector|property)'),
    (r'py:(class|exc|obj)', r'(Attribute|Interface|TransientError|'
                            r'AlreadyInTransaction|ISavepointDataManager|'
                            r'IRetryDataManager|ISynchronizer|'
                            r'IDataManager|ITransaction)'),
]

autodoc_member_order = 'bysource'
# Names under their module's heading, not dotted in full every time.
add_module_names = False
autodoc_typehints = 'signature'
autoclass_content = 'both'

# The docs' own examples run under "sphinx-build -b doctest"; the
# narrative doctests included from tests/ are run by the test suite, which
# gives each its own database (tests/test_doctests.py).
doctest_test_doctest_blocks = ''

# The reference's checks (see _ext/zopeless_reference.py).
zopeless_source_root = ROOT
zopeless_api_packages = [
    ('canonical.lp', []),
    ('canonical.database', ['canonical.database.cluster']),
    ('canonical.launchpad.scripts', ['canonical.launchpad.scripts.ftests']),
    ('canonical.launchpad.database', []),
    ('canonical.launchpad.ftests', []),
    ('canonical.testing', []),
]
zopeless_envvar_paths = ['src/canonical', 'scripts', 'benchmarks', 'chaos']
# Documented because users set them, read by libpq or the shell scripts
# rather than by the Python code.
zopeless_envvars_read_elsewhere = ['PGDATABASE', 'PGPASSWORD', 'PYTHON']

html_theme = 'alabaster'
html_theme_options = {
    'description': 'SQLObject models on PostgreSQL outside a web server',
    'fixed_sidebar': True,
    'page_width': '1160px',
    'sidebar_width': '240px',
    'show_relbars': True,
}
html_sidebars = {'**': ['about.html', 'navigation.html', 'relations.html',
                        'searchbox.html']}
html_static_path = ['_static']
html_css_files = ['zopeless.css']
html_title = 'Zopeless %s' % release
html_show_sourcelink = False
