"""The herd: fifty threads through one outage; who probes, and how soon
all of them are done once the database is back."""

from benchmarks.registry import Section, register
from benchmarks.sections.recovery import resilient
from benchmarks.sections.throughput import mark


class Herd(Section):
    name = 'herd'
    order = 50

    def steps(self, run):
        return len(resilient(run)) if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks import workloads as W
        outage = run.settings['herd_outage']
        for name in resilient(run):
            run.progress.step('herd %s (%.1f s outage)' % (name, outage))
            h = W.herd(run.system(name), run.cluster, run.counter,
                       outage=outage)
            run.results.add(name, 'herd', 'attempts-during-outage',
                            h['attempts_per_second'], 'attempts/s',
                            floor='zopeless', attempts=h['attempts'],
                            probing_threads=h['probing_threads'],
                            outage_seconds=h['outage_seconds'])
            run.results.add(name, 'herd', 'all-50-done-after-ready',
                            h['all_done'] * 1000, 'ms', floor='zopeless',
                            median_client_ms=h['median_done'] * 1000)

    def targets(self, results):
        lines = []
        att = results.find('zopeless', 'herd', 'attempts-during-outage')
        done = results.find('zopeless', 'herd', 'all-50-done-after-ready')
        if att:
            lines.append('  %s herd: %d probing thread(s), %.1f attempts/s '
                         'during the outage (target: one prober)' % (
                             mark(att['probing_threads'] <= 1),
                             att['probing_threads'], att['median']))
        if done:
            lines.append('  %s herd: all 50 done %.0f ms after ready (target '
                         '<= 200 ms)' % (mark(done['median'] <= 200),
                                         done['median']))
        return lines


register(Herd())
