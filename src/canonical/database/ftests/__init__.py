"""The seed's name for where the test database server is.

``getDBHost()`` and ``getDBPort()`` live in ``canonical.testing.dbhost``
with the rest of the test kit; this package keeps the name the 2005
doctests import them by.  It is the one place in ``canonical.database``
that reaches the test kit, and only when a test calls it.
"""

__all__ = ['getDBHost', 'getDBPort']


def getDBHost():
    """See canonical.testing.dbhost.getDBHost."""
    from canonical.testing.dbhost import getDBHost
    return getDBHost()


def getDBPort():
    """See canonical.testing.dbhost.getDBPort."""
    from canonical.testing.dbhost import getDBPort
    return getDBPort()
