"""Recovery: from the database being back to the first commit, over many
short outages, for the systems that survive one."""

import statistics

from benchmarks.registry import Section, register
from benchmarks.sections.throughput import mark


def resilient(run):
    from benchmarks import systems as S
    return [n for n in S.RESILIENT if n in run.available]


class Recovery(Section):
    name = 'recovery'
    order = 40

    def steps(self, run):
        return len(resilient(run)) if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks import workloads as W
        settings = run.settings
        for name in resilient(run):
            run.progress.step('recovery %s' % name)
            lat = W.recovery(run.system(name), run.cluster,
                             settings['outages'], down=settings['down'],
                             progress=lambda m, n=name: run.progress.show(
                                 'recovery %s %s' % (n, m)))
            run.results.add(name, 'recovery', 'ready-to-commit',
                            statistics.median(lat) * 1000, 'ms',
                            p95=W.percentile(lat, 0.95) * 1000,
                            floor='zopeless', outages=len(lat),
                            samples_ms=[round(x * 1000, 2) for x in lat])

    def targets(self, results):
        rec = results.find('zopeless', 'recovery', 'ready-to-commit')
        if not rec:
            return []
        others = [e for e in results.entries if e['workload'] == 'recovery'
                  and e['system'] != 'zopeless']
        ahead = all(rec['p95'] < e['p95'] for e in others)
        return ['  %s recovery p95 %.1f ms (target < 100 ms), %s every '
                'anchor' % (mark(rec['p95'] < 100 and ahead), rec['p95'],
                            'ahead of' if ahead else 'NOT ahead of')]


register(Recovery())
