"""Database policies: which server a unit of work runs on (Launchpad's
names and behaviour, lp.services.database.policy).

A policy is in force in one thread, inside ``with policy:`` (or between
``install()`` and ``uninstall()``); policies nest and the innermost wins.
Without one, units run on the primary, as they always did.  The choice is
made when a unit begins; a unit already running keeps its server::

    with StandbyDatabasePolicy():
        for person in Person.select():     # read from a standby
            ...
        transaction.commit()

* PrimaryDatabasePolicy: the primary (the default).
* StandbyDatabasePolicy: a standby, read-only; the primary (still
  read-only) when no standby is fit: none answers, each lags more than
  max_usable_lag, or none replays this process's last commit within
  standby_catch_up_timeout.
* StandbyOnlyDatabasePolicy: a standby or NoUsableStandbyError; asking for
  the primary raises DisallowedStore.
* DatabaseBlockedPolicy: no database at all (DisallowedStore).
"""

from __future__ import annotations

import threading
from typing import Any, List, Optional

from zope.interface import implementer

from canonical.database.interfaces import DEFAULT_FLAVOR
from canonical.database.interfaces import PRIMARY_FLAVOR
from canonical.database.interfaces import STANDBY_FLAVOR
from canonical.database.interfaces import DisallowedStore
from canonical.database.interfaces import IDatabasePolicy

__all__ = ['BaseDatabasePolicy', 'PrimaryDatabasePolicy',
           'StandbyDatabasePolicy', 'StandbyOnlyDatabasePolicy',
           'DatabaseBlockedPolicy', 'current_policy', 'policy_named',
           'POLICIES']

_local = threading.local()


# Set once any thread first installs a policy: until then begin() need
# not look for one (a module attribute, read without a call).
ever_used = False


def _stack() -> List[IDatabasePolicy]:
    global ever_used
    stack = getattr(_local, 'stack', None)
    if stack is None:
        stack = _local.stack = []
        ever_used = True
    return stack


def current_policy() -> Optional[IDatabasePolicy]:
    """The innermost policy in force in this thread; None: the primary."""
    stack = getattr(_local, 'stack', None)
    return stack[-1] if stack else None


@implementer(IDatabasePolicy)
class BaseDatabasePolicy:
    """See IDatabasePolicy.  ``max_usable_lag`` (seconds) overrides the
    configuration's for the units begun under this policy."""

    default_flavor = PRIMARY_FLAVOR

    def __init__(self, request: Any = None,
                 max_usable_lag: Optional[float] = None) -> None:
        # ``request``: Launchpad's signature; scripts have none.
        self.max_usable_lag = max_usable_lag

    def flavor_for(self, flavor: str = DEFAULT_FLAVOR) -> str:
        return self.default_flavor if flavor == DEFAULT_FLAVOR else flavor

    def allows_primary_fallback(self) -> bool:
        return True

    def install(self) -> None:
        _stack().append(self)

    def uninstall(self) -> None:
        stack = _stack()
        assert stack and stack[-1] is self, (
            'Unexpected database policy %r: %r is the innermost.'
            % (self, stack[-1] if stack else None))
        stack.pop()

    def __enter__(self) -> 'BaseDatabasePolicy':
        self.install()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        return '<%s>' % type(self).__name__


class PrimaryDatabasePolicy(BaseDatabasePolicy):
    """Units run on the primary (what no policy means too)."""

    default_flavor = PRIMARY_FLAVOR


class StandbyDatabasePolicy(BaseDatabasePolicy):
    """Read units on a standby; on the primary, still read-only, when no
    standby is fit."""

    default_flavor = STANDBY_FLAVOR


class StandbyOnlyDatabasePolicy(BaseDatabasePolicy):
    """Read units on a standby only: the primary is never used."""

    default_flavor = STANDBY_FLAVOR

    def flavor_for(self, flavor: str = DEFAULT_FLAVOR) -> str:
        if flavor == PRIMARY_FLAVOR:
            raise DisallowedStore(flavor)
        return STANDBY_FLAVOR

    def allows_primary_fallback(self) -> bool:
        return False


class DatabaseBlockedPolicy(BaseDatabasePolicy):
    """No unit may use the database."""

    def flavor_for(self, flavor: str = DEFAULT_FLAVOR) -> str:
        raise DisallowedStore(flavor)


# For scripts' --db-policy option.
POLICIES = {
    'primary': PrimaryDatabasePolicy,
    'standby': StandbyDatabasePolicy,
    'standby-only': StandbyOnlyDatabasePolicy,
}


def policy_named(name: str) -> IDatabasePolicy:
    """A new policy of ``name`` (a key of POLICIES)."""
    return POLICIES[name]()
