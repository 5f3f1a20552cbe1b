"""The imports run down the layers, and none in a circle: the check of
``make layering`` (scripts/layering.py), run in the suite."""

import importlib.util
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), 'scripts', 'layering.py')


def load():
    spec = importlib.util.spec_from_file_location('layering', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


layering = load()


class TestLayering(unittest.TestCase):

    def test_no_import_runs_up_a_layer(self):
        self.assertEqual(layering.layer_problems(), [])

    def test_no_import_cycle(self):
        self.assertEqual(layering.cycles(), [])

    def test_the_library_and_the_kit_are_both_read(self):
        found = layering.modules()
        for name in ('canonical.database.txcontrol',
                     'canonical.database.ftests', 'canonical.testing.servers',
                     'canonical.testing.cluster.replication', 'chaos.topology',
                     'benchmarks.run', 'canonical.lp'):
            self.assertIn(name, found)


class TestTheCheckItself(unittest.TestCase):
    """What the check counts: a lazy or by-name import is an import."""

    SOURCE = '\n'.join([
        'import os',
        'from canonical.database import sqlbase',
        'def later():',
        '    from canonical.testing.servers import Servers',
        '    import importlib',
        "    importlib.import_module('chaos.soak')",
        "    __import__('canonical.lp')",
        'if TYPE_CHECKING:',
        '    from . import interfaces',
    ])

    def graph(self, name, source):
        known = {name: os.path.join(layering.ROOT, 'src', 'x.py'),
                 'canonical.database.sqlbase': 'sqlbase.py',
                 'canonical.database.interfaces': 'interfaces.py'}
        return known, {name: layering.imports_of(name, source, known)}

    def test_every_kind_of_import_is_read(self):
        found, graph = self.graph('canonical.database.x', self.SOURCE)
        self.assertEqual(sorted(graph['canonical.database.x']), [
            ('canonical.database.interfaces', 9),
            ('canonical.database.sqlbase', 2),
            ('canonical.lp', 7), ('canonical.testing.servers', 4),
            ('chaos.soak', 6), ('importlib', 5), ('os', 1)])

    def test_imports_up_a_layer_are_reported(self):
        found, graph = self.graph('canonical.database.x', self.SOURCE)
        problems = layering.layer_problems(found, graph)
        self.assertEqual(len(problems), 3, problems)
        self.assertIn('canonical.database.x imports canonical.testing.servers'
                      ', a layer above canonical.database', problems[0])

    def test_the_shims_may_reach_the_kit_and_nothing_else(self):
        found, graph = self.graph('canonical.database.ftests', self.SOURCE)
        problems = layering.layer_problems(found, graph)
        self.assertEqual([p.split(': ')[1].split(',')[0] for p in problems],
                         ['canonical.database.ftests imports chaos.soak',
                          'canonical.database.ftests imports canonical.lp'])

    def test_a_cycle_is_found_even_through_a_function(self):
        graph = {'a': [('b', 1)], 'b': [('c', 3)], 'c': [('a', 9)],
                 'd': [('a', 1)]}
        self.assertEqual(layering.cycles({}, graph), [['a', 'b', 'c']])
