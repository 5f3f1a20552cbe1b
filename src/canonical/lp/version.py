"""The version of the zopeless distribution.

This assignment is the one place that defines it: setup.py reads it from
here, and an installed copy reports the same through
``importlib.metadata.version('zopeless')``.  CHANGES.rst has an entry for
every version.
"""

__all__ = ['__version__']

__version__ = '0.1.0.dev0'
