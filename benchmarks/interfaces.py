"""The contracts of the failover benchmark (benchmarks/failover*.py).

The older sections (throughput, round trips, recovery, herd, memory) call
duck-typed systems; these contracts cover what the failover section calls
on its systems, their clients and the servers it fails over.
"""

from zope.interface import Attribute
from zope.interface import Interface

__all__ = ['IFailoverSystem', 'IFailoverClient', 'IServerPair']


class IFailoverClient(Interface):
    """One thread's connection(s) to a primary and standby, through one
    system, in that system's recommended way of surviving a failover.

    Made, used and closed in one thread.
    """

    retry_errors = Attribute(
        'The exception classes after which the recipe runs the unit again '
        '(after recover()); anything else ends the writer.')

    def write(uid):
        """Run one unit of work inserting ``uid`` and commit it; return
        the server that took it as it names itself (``host:port`` of
        inet_server_addr() and inet_server_port())."""

    def recover(error):
        """What the recipe does after an attempt failed with ``error``
        (abort, maybe sleep) before the unit is run again."""

    def close():
        """Let go of the connections."""


class IFailoverSystem(Interface):
    """A system compared in the failover section, with one configuration
    (its recipe, and which libpq timeouts it sets)."""

    name = Attribute('Its name in results.json ("zope.sqlalchemy", '
                     '"storm (libpq defaults)", ...).')
    recipe = Attribute('One line: what the system does to survive a '
                       'failover, for the report.')

    def client():
        """A new IFailoverClient (called in the thread that will use it)."""

    def attempts():
        """Connection attempts the system itself counted so far, or None
        when it counts none (the psycopg2.connect calls are counted for
        every system by the run)."""

    def close():
        """Release what the system holds (pools, the installed manager)."""


class IServerPair(Interface):
    """A primary and a streaming standby that swap roles at each failover:
    the old primary comes back as the standby of its successor.  The test
    kit's Servers that made them deletes them."""

    primary = Attribute('The IReplicationNode taking writes now.')
    standby = Attribute('The IReplicationNode streaming from it.')
    silent_possible = Attribute(
        'True when each node has a network namespace of its own, so that '
        'the primary can vanish silently (root and iproute2 needed).')

    def hosts():
        """[(host, port)] of both nodes, in a fixed order: the host list
        every system is given."""

    def set_synchronous(synchronous):
        """Make the standby synchronous (True) or asynchronous (False)."""

    def crash():
        """Stop the primary with ``pg_ctl stop -m immediate``."""

    def cut():
        """Make the primary vanish silently (packets dropped, no reset)."""

    def promote():
        """Promote the standby: the roles swap (the old primary is left
        down, or cut off)."""

    def rejoin():
        """Bring the old primary back as a streaming standby of the new one
        (pg_rewind), ending whatever connections to it clients still hold
        when it was cut off."""
