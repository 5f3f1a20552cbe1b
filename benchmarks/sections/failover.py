"""The failover section (benchmarks/failover*.py): on a primary and a
standby of its own, so it needs no benchmark cluster."""

from benchmarks.registry import Section, register


class Failover(Section):
    name = 'failover'
    order = 70
    only_help = 'failover (on a primary and a standby of its own)'
    needs_cluster = False

    def steps(self, run):
        return 1 if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks import failover
        from benchmarks import systems as S
        from benchmarks.failover_systems import FAILOVER_SYSTEMS
        from benchmarks.failover_systems import available as failover_names
        S.ZopelessSystem.close_current()   # the section installs its own
        run.progress.step('failover')
        run.extra['failover'] = failover.run_section(
            run.results, run.args.quick,
            failover_names(FAILOVER_SYSTEMS, run.problems), run.counter,
            say=lambda m: run.progress.show(m))

    def summary(self, results):
        from benchmarks.failover import summary
        return summary(results)


register(Failover())
