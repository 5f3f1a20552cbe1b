"""The Patroni section (benchmarks/patroni.py): on a Patroni cluster of
its own, so it needs no benchmark cluster.

It runs only when asked for by name (``--only patroni``): it needs root
(network namespaces), Patroni, etcd and HAProxy installed, and a few
minutes, which a plain ``bin/bench`` should not impose."""

from benchmarks.registry import Section, register

__all__ = ['Patroni']


class Patroni(Section):
    name = 'patroni'
    order = 75
    only_help = 'patroni (on a Patroni cluster of its own; only when named)'
    needs_cluster = False

    def is_wanted(self, run):
        return self.name in set(filter(None, run.args.only.split(',')))

    def steps(self, run):
        return 1 if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks import patroni
        from benchmarks.failover_systems import FAILOVER_SYSTEMS
        from benchmarks.failover_systems import available
        run.progress.step('patroni')
        run.extra['patroni'] = patroni.run_section(
            run.results, run.args.quick,
            available(FAILOVER_SYSTEMS, run.problems),
            say=lambda m: run.progress.show(m))

    def summary(self, results):
        from benchmarks.patroni import summary
        return summary(results)


register(Patroni())
