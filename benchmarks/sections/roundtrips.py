"""Round trips per transaction, counted by a proxy, against raw psycopg2."""

from benchmarks import env
from benchmarks.registry import Section, register
from benchmarks.sections.throughput import THROUGHPUT, mark


def counted(run):
    """The systems counted: every one available, and the library once
    more with resolve_commit_outcome."""
    from benchmarks import systems as S
    names = list(run.available)
    if 'zopeless' in run.available:
        names.append(S.RESOLVED)
    return names


class RoundTrips(Section):
    name = 'roundtrips'
    order = 30

    def steps(self, run):
        return len(counted(run)) if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks import systems as S
        from benchmarks import workloads as W
        from benchmarks.anchors import make_system
        from canonical.testing.tcpproxy import TCPProxy
        results = run.results
        proxy = TCPProxy(run.cluster.host, run.cluster.port)
        pargs = (proxy.host, proxy.port, env.DBNAME, env.DBUSER)
        for name in counted(run):
            run.progress.step('roundtrips %s' % name)
            sysobj = make_system(name, *pargs)
            for workload in THROUGHPUT:
                if name not in S.WORKLOAD_SYSTEMS[workload] and \
                        name != S.RESOLVED:
                    continue
                per_tx, statements, conns = W.count_round_trips(
                    sysobj, workload, proxy, run.ids)
                results.add(name, 'roundtrips', workload, per_tx,
                            'round trips/tx', floor='raw-psycopg2',
                            statements=statements, connections_per_tx=conns)
            if name != 'zopeless':
                sysobj.close()
        proxy.close()
        # Round trips compare with raw psycopg2's SQL transaction of the
        # same kind (it has no ORM); the run keeps these ratios.
        for e in results.entries:
            if e['workload'] == 'roundtrips' and e['metric'].endswith('-orm'):
                ref = results.find('raw-psycopg2', 'roundtrips',
                                   e['metric'].replace('-orm', '-sql'))
                if ref:
                    e['ratio'] = e['median'] / ref['median']
                    e['ratio_to'] = 'raw-psycopg2 (%s)' % ref['metric']
                    e['_fixed'] = True

    def targets(self, results):
        from benchmarks.systems import RESOLVED
        lines = []
        for wl in THROUGHPUT:
            e = results.find('zopeless', 'roundtrips', wl)
            if e is None or e['ratio'] is None:
                continue
            line = '  %s round trips %s: %.2f per tx (%s; target 2), raw ' \
                'psycopg2 %.2f' % (mark(e['median'] == 2), wl, e['median'],
                                  ' '.join(e['statements']),
                                  e['median'] / e['ratio'])
            plain = results.find('sqlobject-plain', 'roundtrips', wl)
            if plain:
                line += ', SQLObject alone %.2f' % plain['median']
            resolved = results.find(RESOLVED, 'roundtrips', wl)
            if resolved:
                # The target allows one more for the outcome marker, which
                # now rides with the BEGIN: fewer meets it.
                line += '; %s with resolve_commit_outcome (%s; target <= 3)' \
                    % ('met' if resolved['median'] <= 3 else 'MISSED',
                       ' '.join(resolved['statements']))
            lines.append(line)
        return lines


register(RoundTrips())
