from setuptools import find_packages, setup

setup(
    name='zopeless',
    version='0.1.0.dev0',
    description=('Zope-component SQLObject models against PostgreSQL outside '
                 'a web server, with one reconnecting transaction manager'),
    long_description=open('README.rst').read() if __import__('os').path.exists('README.rst') else '',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    include_package_data=True,
    zip_safe=False,
    python_requires='>=3.9',
    install_requires=[
        'setuptools',
        'zope.interface>=6,<9',
        'zope.component>=6,<8',
        'zope.configuration>=5,<8',
        'zope.schema>=7,<9',
        'transaction>=4,<6',
        'psycopg2-binary>=2.9,<2.10',
        'SQLObject>=3.10,<4',
        'Twisted>=22',
    ],
    extras_require={
        'test': ['zope.testrunner>=6', 'hypothesis>=6', 'zope.testing>=6'],
    },
)
