"""initZopeless(): what a script calls to use the models outside Zope.

::

    from canonical.lp import initZopeless
    ztm = initZopeless(implicitBegin=False)
    ztm.begin()
    ...
    ztm.commit()
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Optional

from zope.component import getGlobalSiteManager
from zope.component import queryUtility
from zope.configuration import xmlconfig

from canonical.database.config import DatabaseConfig
from canonical.database.forksafety import renew_after_fork
from canonical.database.interfaces import ConflictingTransactionManagerError
from canonical.database.interfaces import IDatabaseConfig
from canonical.database.interfaces import IZopelessTransactionManager
from canonical.database.isolation import AUTOCOMMIT_ISOLATION
from canonical.database.isolation import READ_COMMITTED_ISOLATION
from canonical.database.isolation import REPEATABLE_READ_ISOLATION
from canonical.database.isolation import SERIALIZABLE_ISOLATION

__all__ = [
    'initZopeless', 'isZopeless', 'installedTransactionManager',
    'site_zcml_path',
    'AUTOCOMMIT_ISOLATION', 'READ_COMMITTED_ISOLATION',
    'REPEATABLE_READ_ISOLATION', 'SERIALIZABLE_ISOLATION',
]


class _Installing:
    """Held while initZopeless() installs.  An object rather than a module
    global, so that forked children can be given a new lock (forksafety).
    """
    lock = threading.RLock()


_installing = _Installing()
renew_after_fork(_installing, 'lock', threading.RLock)
_zcml_loaded = False


def site_zcml_path() -> str:
    """The site ZCML initZopeless() executes, the first of:

    1. the file named by ``$ZOPELESS_SITE_ZCML``;
    2. ``zcml/script.zcml`` of the source checkout, when the library runs
       from one (``src/canonical/lp`` below a directory with ``setup.py``);
    3. ``canonical/lp/script.zcml``, the library's own, which registers the
       manager and its connections and declares no database.

    A site's file includes the library's (``<include package="canonical.lp"
    file="script.zcml" />``) and adds its own directives.
    """
    path = os.environ.get('ZOPELESS_SITE_ZCML')
    if path:
        return path
    here = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.normpath(os.path.join(here, *[os.pardir] * 3))
    site = os.path.join(checkout, 'zcml', 'script.zcml')
    if os.path.exists(os.path.join(checkout, 'setup.py')) and \
            os.path.exists(site):
        return site
    return os.path.join(here, 'script.zcml')


def _load_site_zcml() -> None:
    global _zcml_loaded
    if not _zcml_loaded:
        xmlconfig.file(site_zcml_path())
        _zcml_loaded = True


def initZopeless(dbname: Optional[str] = None, dbhost: Optional[str] = None,
                 dbuser: Optional[str] = None, implicitBegin: bool = True,
                 isolation: str = READ_COMMITTED_ISOLATION,
                 debug: bool = False, dsn: Optional[str] = None,
                 **options: Any) -> IZopelessTransactionManager:
    """Install the Zopeless transaction manager and return it.

    Connection settings come from the arguments, then the environment
    (LP_DBNAME, LP_DBHOST, LP_DBUSER, then libpq's PG* variables), then a
    ``<db:database>`` declared in the site ZCML.  ``dbhost`` may carry libpq
    keywords: ``dbhost='localhost port=5555'``.  Further keywords
    (``password``, ``reconnect_timeout``, ``reconnect_max_delay``,
    ``resolve_commit_outcome``, ``libpq_options``) go to DatabaseConfig.

    Raises ConfigurationError for malformed settings (before anything is
    installed) and ConflictingTransactionManagerError when a manager with
    other settings is installed.  No connection is made here.
    """
    with _installing.lock:
        _load_site_zcml()
        declared = queryUtility(IDatabaseConfig)
        if declared is not None and dbname is dbhost is dbuser is dsn is None \
                and not options:
            # The site's database, with every setting it declares; the
            # arguments change only what they name.
            config = declared.replace(implicitBegin=implicitBegin,
                                      isolation=isolation, debug=debug)
        else:
            config = DatabaseConfig(dbname=dbname, dbhost=dbhost,
                                    dbuser=dbuser, dsn=dsn,
                                    implicitBegin=implicitBegin,
                                    isolation=isolation, debug=debug,
                                    **options)
        installed = installedTransactionManager()
        if installed is not None:
            if installed.config == config:
                warnings.warn('initZopeless() called again with the same '
                              'settings; returning the installed manager.',
                              stacklevel=2)
                return installed
            raise ConflictingTransactionManagerError(
                'A transaction manager for %s is already installed; call its '
                'uninstall() before initZopeless() with other settings.'
                % installed.config.describe())
        ztm = IZopelessTransactionManager(config)
        getGlobalSiteManager().registerUtility(ztm,
                                               IZopelessTransactionManager)
        return ztm


def installedTransactionManager(
) -> Optional[IZopelessTransactionManager]:
    """The installed manager (the IZopelessTransactionManager utility), or
    None."""
    return queryUtility(IZopelessTransactionManager)


def isZopeless() -> bool:
    """True while a Zopeless transaction manager is installed."""
    return installedTransactionManager() is not None


# -- test isolation ----------------------------------------------------------
# zope.testing.cleanup.cleanUp() undoes initZopeless(), as zope.component's
# own clean-up empties its registry; registered only where zope.testing is
# installed, so scripts do not need it.  That registry clean-up runs before
# this one (it was registered first) and forgets the utility, so the
# installed manager is remembered from its registration event instead.

import transaction  # noqa: E402
import zope.event  # noqa: E402
from zope.interface.interfaces import IUtilityRegistration  # noqa: E402
from zope.interface.interfaces import Registered  # noqa: E402
from zope.interface.interfaces import Unregistered  # noqa: E402

_registered_manager: Optional[IZopelessTransactionManager] = None


def _note_registration(event: object) -> None:
    global _registered_manager
    registration = getattr(event, 'object', None)
    if not IUtilityRegistration.providedBy(registration) or \
            registration.provided is not IZopelessTransactionManager:
        return
    if isinstance(event, Registered):
        _registered_manager = registration.component
    elif isinstance(event, Unregistered) and \
            registration.component is _registered_manager:
        _registered_manager = None


def _reset_for_tests() -> None:
    global _registered_manager, _zcml_loaded
    ztm, _registered_manager = _registered_manager, None
    if ztm is not None:
        ztm.uninstall()
    transaction.manager.explicit = False
    transaction.manager.abort()
    _zcml_loaded = False  # the registry is empty: execute the ZCML again


try:
    from zope.testing.cleanup import addCleanUp
except ImportError:
    pass
else:
    zope.event.subscribers.append(_note_registration)
    addCleanUp(_reset_for_tests)
    del addCleanUp
