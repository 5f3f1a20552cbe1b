"""The benchmark run: every wanted section (benchmarks/sections/), every
system, one process."""

import logging
import os
import platform
import sys
import time

from zope.interface import implementer

from benchmarks import env
from benchmarks import machine
from benchmarks.cli import FULL, QUICK, parse_args
from benchmarks.interfaces import IBenchRun
from benchmarks.output import write_and_show
from benchmarks.registry import sections, without_cluster
from benchmarks.report import Progress, Results

__all__ = ['main', 'parse_args', 'only_failover']


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = QUICK if args.quick else FULL
    only = set(filter(None, args.only.split(',')))
    wanted = lambda w: not only or w in only   # noqa: E731
    for name in ('canonical', 'sqlalchemy', 'storm'):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    problems = env.ensure_extras(log=say)
    from benchmarks import systems as S
    available = [s for s in S.ALL if not (
        s == 'storm' and ('storm' in problems or
                          'storm.zope.zstorm' in problems)) and not (
        s == 'zope.sqlalchemy' and ('sqlalchemy' in problems or
                                    'zope.sqlalchemy' in problems))]
    for module, error in problems.items():
        say('anchor unavailable: %s (%s)' % (module, error))

    if without_cluster(wanted):
        # The sections asked for make servers of their own.
        return run(args, settings, wanted, available, problems, None, say)
    say('starting the benchmark cluster under %s' % env.CLUSTER_BASE)
    with env.BenchCluster() as cluster:
        return run(args, settings, wanted, available, problems, cluster, say)


def only_failover(wanted):
    """True when the failover section alone is wanted (no cluster)."""
    return wanted('failover') and without_cluster(wanted)


@implementer(IBenchRun)
class Run:
    """What the sections of one run share."""

    def __init__(self, args, settings, wanted, available, problems,
                 cluster, say):
        self.args, self.settings, self.wanted = args, settings, wanted
        self.available, self.problems = available, problems
        self.cluster, self.say = cluster, say
        self.sections = sections()
        self.ids = list(range(1, 31))
        self.counter = env.ConnectCounter()
        self.results = Results()
        self.conn_args, self._made = None, {}
        self.extra = {}
        self.progress = None

    def connect(self):
        """Fill the benchmark database; make every system but the library
        (made afresh on each call of system(), as it installs itself)."""
        from benchmarks.anchors import make_system
        if self.cluster is None:
            return None
        cluster = self.cluster
        setup, (low, high, count) = env.prepare_database(cluster,
                                                         log=self.say)
        self.conn_args = (cluster.host, cluster.port, env.DBNAME, env.DBUSER)
        self._made = {name: make_system(name, *self.conn_args)
                      for name in self.available if name != 'zopeless'}
        return count

    def system(self, name):
        from benchmarks.anchors import make_system
        if name == 'zopeless':
            return make_system('zopeless', *self.conn_args)
        return self._made[name]


def run(args, settings, wanted, available, problems, cluster, say):
    """Every section asked for, against cluster; prints the report."""
    bench = Run(args, settings, wanted, available, problems, cluster, say)
    bench.counter.install()
    count = bench.connect()
    chosen = [s for s in bench.sections if s.is_wanted(bench)]
    bench.progress = Progress(sum(s.steps(bench) for s in chosen))
    started = time.time()
    bench.extra.update({'settings': settings, 'started': started,
                        'python': platform.python_version(),
                        'cpus': os.cpu_count(), 'anchor_problems': problems,
                        'person_rows': count,
                        'machine': describe_machine(bench)})
    before = machine.sample()
    for section in chosen:
        section.run(bench)
    bench.progress.finish()
    bench.extra['seconds'] = time.time() - started
    bench.extra['machine_during'] = machine.between(before, machine.sample())
    write_and_show(bench, chosen, alone=cluster is None)

    if args.profile and cluster is not None:
        from benchmarks.profiling import profile_library
        print(profile_library(bench.system('zopeless'), bench.ids,
                              raw=bench.system('raw-psycopg2')))
    if 'zopeless' in available and wanted('read-sql'):
        bench.system('zopeless').close()
    bench.counter.uninstall()
    return 0


def describe_machine(bench):
    """The machine of this run (see benchmarks/machine.py), with its round
    trips on the benchmark's cluster when there is one."""
    from benchmarks.workloads import in_thread
    described = machine.describe()
    if bench.conn_args is not None:
        described['round_trip_us'] = in_thread(
            machine.round_trips, *bench.conn_args, timeout=60)
    return described
