"""What the soak's parts promise each other.

A topology is the set of servers the workers write to (one cluster
behind the test proxy, a primary and a standby each in a network
namespace of its own, or a primary behind PgBouncer); a fault injector
runs the fault kinds of one topology on a seeded schedule.
"""

from zope.interface import Attribute
from zope.interface import Interface

__all__ = ['ITopology', 'IFaultInjector']


class ITopology(Interface):
    """The servers of one soak and how to reach them."""

    name = Attribute("'single', 'ha' or 'bouncer'.")
    kinds = Attribute("The fault kinds this topology can take (a tuple).")
    base = Attribute("The directory its servers live in.")
    dbhost = Attribute(
        "The library's dbhost, as users write it ('h1,h2 port=p1,p2').")
    dbuser = Attribute("The role the workers log in as.")
    password = Attribute("Its password, or None.")

    def start(schema, accounts, opening):
        """Start the servers and create the soak's database: ``schema``
        (SQL), then ``accounts`` accounts at balance ``opening``."""

    def admin(dbname='postgres', **kw):
        """A new autocommit superuser psycopg2 connection to the current
        primary that goes through no proxy, pooler or network cut."""

    def app():
        """A new psycopg2 connection to the current primary as the role
        that owns the soak's database (not autocommit)."""

    def injector(seed, kinds, interval, rounds=None):
        """An IFaultInjector for ``kinds`` (a subset of ``kinds``)."""

    def leftovers(baseline, wait=10.0):
        """The library's sessions and prepared transactions left (see
        chaos.audit.leftovers); ``baseline`` sessions are not the
        library's."""

    def release():
        """The workers are done: close what stood in front of the servers
        for them alone (the proxy)."""

    def close(keep):
        """Stop the servers; delete them unless ``keep``."""


class IFaultInjector(Interface):
    """A thread injecting faults on a seeded schedule until stopped."""

    faults = Attribute("The chaos.faults.Fault records, in order.")
    crashed = Attribute("Why the injector itself crashed, or None.")
    kinds = Attribute("The kinds it deals.")
    server_lost = Attribute(
        "uid -> acknowledgement deadline: units an old primary held, after "
        "an asynchronous failover, that its successor lacked.  A unit "
        "reported committed by then and missing afterwards was lost by the "
        "server, not misreported by the library.")
    split_brain_writes = Attribute(
        "Rows an old primary took after its successor was promoted (must "
        "stay 0).")

    def start():
        """Start injecting."""

    def stop(timeout=120.0):
        """Stop injecting, undo lasting faults, wait for the thread."""

    def is_alive():
        """True while the thread runs."""

    def counts():
        """kind -> faults injected."""
