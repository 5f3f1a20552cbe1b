"""Memory per connection and per thousand instances, each system measured
in a child process of its own (benchmarks/memory.py)."""

from benchmarks.registry import Section, register


class Memory(Section):
    name = 'memory'
    order = 60

    def steps(self, run):
        return len(run.available) if self.is_wanted(run) else 0

    def run(self, run):
        from benchmarks.memory import measure_in_child
        if 'zopeless' in run.available:
            run.system('zopeless').close()   # the children use their own
        for name in run.available:
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
