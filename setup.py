import os
import re

from setuptools import find_namespace_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# What the library imports at run time.  The lower bounds are the versions
# the oldest supported Python runs the test suite with (constraints.txt,
# made by scripts/pins.py); the upper bounds are the next major versions.
# psycopg2-binary 2.9.2 is the first with libpq 14, whose messages (which
# the library passes on when a connection fails) the doctests show.
INSTALL_REQUIRES = [
    'zope.interface>=6,<9',
    'zope.component>=6,<8',
    'zope.event>=5,<7',
    'zope.configuration>=5,<8',
    'zope.schema>=7,<9',
    'transaction>=4,<6',
    'psycopg2-binary>=2.9.2,<2.10',
    'SQLObject>=3.10,<4',
]

EXTRAS_REQUIRE = {
    # The test kit's extra needs: the test runner, the cleanup hook, the
    # property tests, and twistd for the port forwarder of the doctests.
    'test': [
        'zope.testrunner>=6',
        'zope.testing>=5.0.1',
        'hypothesis>=6',
        'Twisted>=22.1',
        # The Prometheus exporter's tests scrape and parse its output.
        'prometheus_client>=0.17,<1',
    ],
    # canonical.database.prometheus: the statistics of each database as
    # Prometheus metrics.
    'prometheus': [
        'prometheus_client>=0.17,<1',
    ],
    # What "make docs" builds the documentation with (docs/): Sphinx, and
    # the extension that documents zope.interface interfaces.
    'docs': [
        'Sphinx>=7.4,<10',
        'repoze.sphinx.autointerface>=1.0,<2',
    ],
}

PYTHONS = ['3.9', '3.10', '3.11', '3.12', '3.13']


def read(name):
    with open(os.path.join(HERE, name), encoding='utf-8') as f:
        return f.read()


def version():
    text = read(os.path.join('src', 'canonical', 'lp', 'version.py'))
    return re.search(r"^__version__ = '([^']+)'$", text, re.M).group(1)


setup(
    name='zopeless',
    version=version(),
    description=('Zope-component SQLObject models against PostgreSQL outside '
                 'a web server, with one reconnecting transaction manager'),
    long_description=read('README.rst') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/x-rst',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Framework :: Zope :: 3',
        'Intended Audience :: Developers',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
    ] + ['Programming Language :: Python :: %s' % v for v in PYTHONS] + [
        'Topic :: Database',
    ],
    package_dir={'': 'src'},
    # Namespace discovery, so that a directory of data files (such as
    # canonical/launchpad/database/sql) is a package and its files are
    # package data.
    packages=find_namespace_packages(
        'src', include=['canonical', 'canonical.*'],
        exclude=['*.__pycache__']),
    # The data files the library and its test kit open at run time.
    package_data={'': ['*.zcml', '*.sql']},
    zip_safe=False,
    python_requires='>=%s' % PYTHONS[0],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
