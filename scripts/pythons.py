"""The supported Pythons and where their interpreters are.

    python3 scripts/pythons.py            # the supported versions, oldest first
    python3 scripts/pythons.py find 3.9   # the path of a 3.9 interpreter

The list is ``PYTHONS`` in setup.py (which also makes python_requires and
the classifiers from it).  An interpreter is ``$PYTHON_3_9`` (for 3.9) when
set, else ``python3.9`` on PATH when it runs, else the newest
``<pyenv root>/versions/3.9.*/bin/python3.9``.  Standard library only.
"""

import ast
import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = ['setup_py_constant', 'supported', 'find_interpreter']


def setup_py_constant(name):
    """The literal value of a module-level assignment in setup.py."""
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError('setup.py assigns no %s' % name)


def supported():
    """The supported Python versions, oldest first ('3.9', ...)."""
    return list(setup_py_constant('PYTHONS'))


def _runs(path, version):
    try:
        out = subprocess.run(
            [path, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'],
            capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def _version_key(path):
    release = path.split(os.sep + 'versions' + os.sep)[1].split(os.sep)[0]
    return [int(p) if p.isdigit() else -1 for p in release.split('.')]


def find_interpreter(version):
    """The path of a Python `version` interpreter, or None."""
    override = os.environ.get('PYTHON_' + version.replace('.', '_'))
    if override:
        return override if _runs(override, version) else None
    on_path = shutil.which('python' + version)
    if on_path and _runs(on_path, version):
        return on_path
    pyenv_root = os.environ.get('PYENV_ROOT') or os.path.expanduser('~/.pyenv')
    found = glob.glob(os.path.join(pyenv_root, 'versions', version + '.*',
                                   'bin', 'python' + version))
    for path in sorted(found, key=_version_key, reverse=True):
        if _runs(path, version):
            return path
    return None


def main(argv):
    if not argv:
        print(' '.join(supported()))
        return 0
    if argv[0] == 'find' and len(argv) == 2:
        path = find_interpreter(argv[1])
        if path is None:
            print('no Python %s found: install it (pyenv install %s) or set '
                  'PYTHON_%s to its path' % (argv[1], argv[1],
                                             argv[1].replace('.', '_')),
                  file=sys.stderr)
            return 1
        print(path)
        return 0
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
