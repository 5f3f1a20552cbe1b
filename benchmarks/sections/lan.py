"""The network variant of the throughput section: the four transactions
through a proxy holding every message back, about a LAN's round trip."""

from benchmarks import env
from benchmarks.registry import Section, register
from benchmarks.sections.throughput import THROUGHPUT, mark, throughput

__all__ = ['LAN', 'LAN_DELAY']

# The proxy holds every message back this long in each direction, about a
# LAN's round trip in all.
LAN_DELAY = 0.00025
LAN = 'throughput-lan'


class Lan(Section):
    name = 'lan'
    order = 20
    targets_order = 35     # after the round trips' targets
    only_help = 'lan (the four through a proxy adding %g ms each way)' % (
        LAN_DELAY * 1000)

    def steps(self, run):
        return len(THROUGHPUT) * run.settings['rounds'] \
            if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks.anchors import make_system
        from canonical.testing.tcpproxy import TCPProxy
        with TCPProxy(run.cluster.host, run.cluster.port) as proxy:
            proxy.set_delay(down=LAN_DELAY, up=LAN_DELAY)
            lan = {}

            def lan_system(name):
                if name not in lan:
                    lan[name] = make_system(name, proxy.host, proxy.port,
                                            env.DBNAME, env.DBUSER)
                return lan[name]
            throughput(run, THROUGHPUT, lan_system, LAN)
            for name, sysobj in lan.items():
                if name != 'zopeless':  # made again for the cluster
                    sysobj.close()
        run.extra['lan_delay_each_way'] = LAN_DELAY

    def targets(self, results):
        lines = []
        for wl in THROUGHPUT:
            zl = results.find('zopeless', wl, LAN)
            raw = results.find('raw-psycopg2', wl.replace('-orm', '-sql'),
                               LAN)
            if not (zl and raw):
                continue
            # Against its floor (raw psycopg2, or SQLObject alone for the
            # ORM); the ORM also against raw psycopg2's SQL of the same kind.
            line = ('  %s %s over the network (%g ms each way): zopeless '
                    '%.0f tx/s, %.2fx %s (target >= 1.3x)' % (
                        mark(zl['ratio'] is not None and zl['ratio'] >= 1.3),
                        wl, LAN_DELAY * 1000, zl['median'], zl['ratio'] or 0,
                        zl['ratio_to']))
            if wl.endswith('-orm'):
                line += '; %.2fx raw psycopg2 %s' % (
                    zl['median'] / raw['median'], raw['workload'])
            lines.append(line)
        return lines


register(Lan())
