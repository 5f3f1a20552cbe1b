"""The servers a soak runs against, chosen by its fault kinds: a registry
the topologies add themselves to.

Each module of chaos/topologies/ registers one topology (its name, its
fault kinds and its class) when imported: ``single`` (one cluster behind
the test proxy), ``ha`` (a primary and a standby in network namespaces of
their own), ``bouncer`` (a primary behind PgBouncer).  A new topology is
one new module there.  The modules import nothing heavy at their top, so
choosing a topology needs neither network namespaces nor PgBouncer.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict, Iterator, NamedTuple, Tuple

from collections.abc import Mapping

from chaos.interfaces import ITopology

__all__ = ['register', 'TOPOLOGY_KINDS', 'topology_for', 'make_topology',
           'descriptions']


class _Entry(NamedTuple):
    kinds: Tuple[str, ...]
    factory: Callable[[str], ITopology]
    order: int
    about: str


_REGISTRY: Dict[str, _Entry] = {}
_discovered = False


def register(name: str, kinds: Tuple[str, ...],
             factory: Callable[[str], ITopology], order: int = 100,
             about: str = '') -> None:
    """Add the topology ``name``, taking fault ``kinds``, made by
    ``factory(base)``; ``order`` places it in listings (lower first) and
    ``about`` says in a few words what it is, for ``bin/chaos --help``."""
    if name in _REGISTRY and _REGISTRY[name].factory is not factory:
        raise ValueError('two chaos topologies are named %r: rename one'
                         % name)
    _REGISTRY[name] = _Entry(tuple(kinds), factory, order, about)


def _registered() -> Dict[str, _Entry]:
    global _discovered
    if not _discovered:
        from chaos import topologies
        for info in pkgutil.iter_modules(topologies.__path__):
            importlib.import_module('%s.%s' % (topologies.__name__,
                                               info.name))
        _discovered = True
    return dict(sorted(_REGISTRY.items(),
                       key=lambda item: (item[1].order, item[0])))


class _Kinds(Mapping):
    """{topology: its fault kinds}, read from the registry when used."""

    def __getitem__(self, name: str) -> Tuple[str, ...]:
        return _registered()[name].kinds

    def __iter__(self) -> Iterator[str]:
        return iter(_registered())

    def __len__(self) -> int:
        return len(_registered())

    def __repr__(self) -> str:
        return repr(dict(self))


TOPOLOGY_KINDS: Mapping = _Kinds()


def descriptions() -> Dict[str, str]:
    """{topology: what it is, in a few words}, in order."""
    return {name: entry.about for name, entry in _registered().items()}


def topology_for(kinds: Tuple[str, ...]) -> str:
    """The one topology taking all ``kinds`` ('single' for none)."""
    names = {name for name, known in TOPOLOGY_KINDS.items()
             for kind in kinds if kind in known}
    unknown = set(kinds) - {k for known in TOPOLOGY_KINDS.values()
                            for k in known}
    if unknown:
        raise ValueError('unknown fault kinds: %s' % ', '.join(
            sorted(unknown)))
    if len(names) > 1:
        raise ValueError('fault kinds of different topologies (%s): run '
                         'one soak per topology' % ', '.join(sorted(names)))
    return names.pop() if names else 'single'


def make_topology(name: str, base: str) -> ITopology:
    registered = _registered()
    if name not in registered:
        names = list(registered)
        raise ValueError('unknown topology %r (%s or %s)' % (
            name, ', '.join(names[:-1]), names[-1]))
    return registered[name].factory(base)
