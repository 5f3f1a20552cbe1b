"""Memory per connection and per thousand instances, each system measured
in a child process of its own (benchmarks/memory.py)."""

from benchmarks.floor import FLOOR_SYSTEM
from benchmarks.registry import Section, register

__all__ = ['measured']


def measured(run):
    """Every available system but the psycopg2+transaction ceiling, which
    keeps no model instances (it runs the SQL workloads only)."""
    return [name for name in run.available if name != FLOOR_SYSTEM]


class Memory(Section):
    name = 'memory'
    order = 60

    def steps(self, run):
        return len(measured(run)) if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks.memory import measure_in_child
        if 'zopeless' in run.available:
            run.system('zopeless').close()   # the children use their own
        for name in measured(run):
            run.progress.step('memory %s' % name)
            m = measure_in_child(name, *run.conn_args)
            run.results.add(name, 'memory', 'per-connection',
                            m['per_connection'] / 1024, 'KiB',
                            floor='raw-psycopg2',
                            connections=m['connections'])
            run.results.add(name, 'memory', 'per-1000-instances',
                            m['per_1000_instances'] / 1024, 'KiB',
                            floor='sqlobject-plain',
                            instances=m['instances'])


register(Memory())
