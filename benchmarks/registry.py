"""The sections of bin/bench: each module of benchmarks/sections/ registers
its own, so that a new section (Patroni failover, read replicas, ...) is
one new module there and nothing else."""

import importlib
import pkgutil

from zope.interface import implementer

from benchmarks.interfaces import IBenchSection

__all__ = ['Section', 'register', 'sections', 'only_help',
           'without_cluster']

_SECTIONS = {}


@implementer(IBenchSection)
class Section:
    """Defaults for a section: one key (its name), wanted by that key."""

    name = None
    order = 100
    targets_order = None
    keys = ()
    only_help = None
    needs_cluster = True

    def __init__(self):
        self.keys = tuple(self.keys) or (self.name,)
        if self.targets_order is None:
            self.targets_order = self.order
        if self.only_help is None:
            self.only_help = ', '.join(self.keys)

    def is_wanted(self, run):
        return any(run.wanted(key) for key in self.keys)

    def steps(self, run):
        return 0

    def run(self, run):
        raise NotImplementedError

    def targets(self, results):
        return []

    def summary(self, results):
        return None


def register(section):
    """Add ``section`` (an IBenchSection) to bin/bench; returns it."""
    if section.name in _SECTIONS:
        raise ValueError('two bin/bench sections are named %r: rename one'
                         % section.name)
    _SECTIONS[section.name] = section
    return section


def sections():
    """Every registered section, in running order (each module of
    benchmarks/sections/ imported first, which registers its own)."""
    from benchmarks import sections as package
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module('%s.%s' % (package.__name__, info.name))
    return sorted(_SECTIONS.values(), key=lambda s: (s.order, s.name))


def only_help():
    """The ``--only`` choices, as the help text lists them."""
    return ', '.join(s.only_help for s in sections())


def without_cluster(wanted):
    """True when every wanted section makes its own servers (and at least
    one is wanted): the run then starts no cluster of its own."""
    chosen = [s for s in sections() if any(wanted(k) for k in s.keys)]
    return bool(chosen) and not any(s.needs_cluster for s in chosen)
