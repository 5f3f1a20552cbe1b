"""The read replicas section (benchmarks/replicas.py): on a primary and two
standbys of its own, so it needs no benchmark cluster."""

from benchmarks.registry import Section, register


class Replicas(Section):
    name = 'replicas'
    order = 75
    only_help = 'replicas (read units on 0, 1, 2 standbys of its own)'
    needs_cluster = False

    def steps(self, run):
        return 1 if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks import replicas
        from benchmarks import systems as S
        S.ZopelessSystem.close_current()   # the section installs its own
        run.progress.step('replicas')
        run.extra['replicas'] = replicas.run_section(
            run.results, run.args.quick,
            say=lambda m: run.progress.show(m))

    def summary(self, results):
        from benchmarks.replicas import summary
        return summary(results)


register(Replicas())
