#!/usr/bin/env python3
"""Which way the imports of the checkout run: ``make layering`` (or
``bin/python scripts/layering.py``); tests/test_layering.py runs it in the
suite.

The layers, bottom up: the library (``canonical.database``); the sample
application and the seed's entry point (``canonical.lp``,
``canonical.launchpad``); the test kit (``canonical.testing``); the tools
of the checkout (``benchmarks``, ``chaos``) and ``tests``.  Each may import
the layers below it, never one above:

* ``canonical.database`` imports none of ``canonical.lp``,
  ``canonical.launchpad``, ``canonical.testing``, ``benchmarks``,
  ``chaos``, ``tests``.  Two compat shims keep seed names and may reach
  the kit (only the kit): ``canonical.database.ftests`` (the seed's
  ``getDBHost``/``getDBPort``) and ``canonical.database.cluster`` (the
  deprecated ``python -m canonical.database.cluster``);
* ``canonical.lp`` and ``canonical.launchpad`` import neither the kit nor
  the tools, except their test fixtures (``canonical.launchpad.ftests``:
  the seed's ``LaunchpadTestSetup`` is a harness of the kit, and
  ``canonical.launchpad.scripts.ftests``), which may import the kit;
* ``canonical.testing`` imports neither the tools nor ``tests``.

Every import counts, at any depth of a module (inside functions, under
``TYPE_CHECKING``) and by name (``importlib.import_module('...')``,
``__import__('...')`` with a literal), read by ``ast`` without importing
anything.  It also finds the import cycles among the modules of
``src/``, ``benchmarks/`` and ``chaos/`` (lazy imports included: a cycle
hidden in a function is still one).  Exits 1 and says what to fix when it
finds either.
"""

import ast
import os
import sys

__all__ = ['RULES', 'modules', 'imports_of', 'layer_problems', 'cycles',
           'main']

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREES = (('src', ('canonical',)), ('.', ('benchmarks', 'chaos')))
TOOLS = ('benchmarks', 'chaos', 'tests')

# (importer prefix, forbidden prefixes, exempt importer prefixes, what the
# exempt ones may still import).
RULES = (
    ('canonical.database',
     ('canonical.lp', 'canonical.launchpad', 'canonical.testing') + TOOLS,
     ('canonical.database.ftests', 'canonical.database.cluster'),
     ('canonical.testing',)),
    ('canonical.lp', ('canonical.testing',) + TOOLS, (), ()),
    ('canonical.launchpad', ('canonical.testing',) + TOOLS,
     ('canonical.launchpad.ftests', 'canonical.launchpad.scripts.ftests'),
     ('canonical.testing',)),
    ('canonical.testing', TOOLS, (), ()),
)


def _under(name, prefix):
    return name == prefix or name.startswith(prefix + '.')


def modules(root=ROOT):
    """{dotted name: file} of every module of the trees checked."""
    found = {}
    for top, packages in TREES:
        base = os.path.join(root, top)
        for package in packages:
            for path, dirs, files in os.walk(os.path.join(base, package)):
                dirs[:] = sorted(d for d in dirs if d != '__pycache__')
                rel = os.path.relpath(path, base).split(os.sep)
                for f in files:
                    if not f.endswith('.py'):
                        continue
                    parts = rel if f == '__init__.py' else rel + [f[:-3]]
                    found['.'.join(parts)] = os.path.join(path, f)
    return found


def _literal_import(node):
    """The module an ``import_module('x')``/``__import__('x')`` call
    names, or None."""
    if not (isinstance(node, ast.Call) and node.args and
            isinstance(node.args[0], ast.Constant) and
            isinstance(node.args[0].value, str)):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else \
        getattr(func, 'id', None)
    return node.args[0].value if name in ('import_module',
                                          '__import__') else None


def imports_of(name, source, known=()):
    """[(imported module, line)] of ``source`` (module ``name``), every
    import at any depth.  ``from a import b`` counts as ``a.b`` when that
    is a module of ``known``, else as ``a``."""
    tree = ast.parse(source)
    package = name if _is_package(name, known) else name.rpartition('.')[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                parts = parts[:len(parts) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            for alias in node.names:
                full = '%s.%s' % (base, alias.name)
                found.append((full if full in known else base, node.lineno))
        else:
            named = _literal_import(node)
            if named:
                found.append((named, node.lineno))
    return found


def _is_package(name, known):
    return known.get(name, '').endswith('__init__.py') \
        if isinstance(known, dict) else False


def _graph(found=None):
    found = modules() if found is None else found
    graph = {}
    for name, path in found.items():
        with open(path, encoding='utf-8') as f:
            graph[name] = imports_of(name, f.read(), found)
    return found, graph


def layer_problems(found=None, graph=None):
    """One line per import running up a layer (empty: none)."""
    if graph is None:
        found, graph = _graph(found)
    problems = []
    for name in sorted(graph):
        for importer, forbidden, exempt, exempt_may in RULES:
            if not _under(name, importer):
                continue
            shim = any(_under(name, e) for e in exempt)
            for target, line in sorted(graph[name], key=lambda i: i[1]):
                bad = [f for f in forbidden if _under(target, f)]
                if bad and not (shim and any(_under(target, m)
                                             for m in exempt_may)):
                    problems.append(
                        '%s:%d: %s imports %s, a layer above %s: move the '
                        'code that needs it up, or the code it needs down'
                        % (os.path.relpath(found[name], ROOT), line, name,
                           target, importer))
    return problems


def cycles(found=None, graph=None):
    """The import cycles among the modules checked: sorted lists of the
    modules of each (strongly connected components of two or more)."""
    if graph is None:
        found, graph = _graph(found)
    edges = {name: sorted({t for t, _ in graph[name]
                           if t in graph and t != name}) for name in graph}
    index, low, stack, on, result = {}, {}, [], set(), []

    def visit(v):
        # Tarjan's algorithm, iterative: the graph may be deep.
        work = [(v, iter(edges[v]))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(edges[w])))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(result)


def main(argv=None):
    found, graph = _graph()
    problems = layer_problems(found, graph)
    problems += ['import cycle: %s: let one side register with the other '
                 'or move what both need into a module of its own'
                 % ' <-> '.join(c) for c in cycles(found, graph)]
    for line in problems:
        print(line)
    if problems:
        return 1
    print('layering: %d modules, every import runs down a layer, no '
          'import cycle' % len(found))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
