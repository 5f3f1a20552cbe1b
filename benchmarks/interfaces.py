"""The contracts of bin/bench: its sections, and the failover section's
systems (benchmarks/failover*.py).

The older sections (throughput, round trips, recovery, herd, memory) call
duck-typed systems; the failover contracts cover what the failover section
calls on its systems, their clients and the servers it fails over.
"""

from zope.interface import Attribute
from zope.interface import Interface

__all__ = ['IBenchSection', 'IBenchRun', 'IFailoverSystem',
           'IFailoverClient', 'IServerPair']


class IBenchRun(Interface):
    """What one ``bin/bench`` run hands each section (benchmarks/run.py)."""

    args = Attribute('The parsed command line (benchmarks/cli.py).')
    settings = Attribute('The rounds, durations and outages of this run '
                         '(cli.FULL or cli.QUICK).')
    cluster = Attribute('The benchmark cluster, or None when no wanted '
                        'section needs it.')
    available = Attribute('The systems whose packages import, in order.')
    problems = Attribute('{module: error} of the anchors that do not.')
    results = Attribute('The run\'s benchmarks.report.Results.')
    extra = Attribute('The dict written to results-meta.json.')
    counter = Attribute('The run\'s benchmarks.env.ConnectCounter.')
    progress = Attribute('The benchmarks.report.Progress line.')
    ids = Attribute('The Person ids the workloads read and write.')
    conn_args = Attribute('(host, port, dbname, user) of the cluster.')
    sections = Attribute('Every registered IBenchSection, in order.')

    def wanted(key):
        """True when ``--only`` asks for ``key`` (or names nothing)."""

    def system(name):
        """The system ``name`` connected to the cluster, made once."""

    def say(*words):
        """One line on stderr."""


class IBenchSection(Interface):
    """One section of bin/bench.  A module of benchmarks/sections/ makes
    one and hands it to benchmarks.registry.register(): the run finds it
    there, no central list names it."""

    name = Attribute('Its name, the key of its figures in the meta file.')
    order = Attribute('Where it runs and reports among the sections '
                      '(lower first).')
    targets_order = Attribute('Where its target lines come among the '
                              'others\' (lower first).')
    keys = Attribute('The ``--only`` names selecting it.')
    only_help = Attribute('Its part of the ``--only`` help text.')
    needs_cluster = Attribute(
        'False when it makes servers of its own: run alone, it replaces '
        'only its own entries of results.json and starts no cluster.')

    def steps(run):
        """How many progress steps it will take in the IBenchRun ``run``
        (0 when not wanted)."""

    def run(run):
        """Measure, adding entries to ``run.results``."""

    def targets(results):
        """Lines of the 'Targets:' block (met or missed), maybe none."""

    def summary(results):
        """A block printed after the targets when it was wanted, or None."""


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
