"""What the reference reads from the code: modules and their public names,
the settings of initZopeless(), <db:database> and the scripts, and the
environment variables the code reads.  No Sphinx here, so that the test
suite checks the documentation with the same functions
(tests/test_docs_reference.py) as the build does
(zopeless_reference.py).
"""

import ast
import glob
import importlib
import inspect
import os
import pkgutil
import re
import typing

__all__ = ['walk_modules', 'public_names', 'origin', 'is_interface',
           'constant_home', 'environment_variables', 'code_settings',
           'script_options', 'option_name', 'default_text',
           'documented_envvars', 'documented_settings']


def walk_modules(package, exclude=()):
    """The names of PACKAGE and of every module below it, sorted, without
    ``__main__`` modules and without EXCLUDE (names, with what is below)."""
    def excluded(name):
        return any(name == e or name.startswith(e + '.') for e in exclude)
    root = importlib.import_module(package)
    names = [package]
    if hasattr(root, '__path__'):
        for info in pkgutil.walk_packages(root.__path__, package + '.'):
            if not info.name.endswith('.__main__'):
                names.append(info.name)
    return sorted(n for n in names if not excluded(n))


def public_names(module_name):
    """The names of a module's ``__all__`` ([] when it has none)."""
    return list(getattr(importlib.import_module(module_name), '__all__', []))


def origin(obj):
    """'module.qualname' where a class, function or interface is defined,
    or None for other objects (constants)."""
    module = getattr(obj, '__module__', None)
    name = getattr(obj, '__qualname__', None) or getattr(obj, '__name__',
                                                          None)
    if isinstance(module, str) and isinstance(name, str) and (
            inspect.isclass(obj) or inspect.isfunction(obj) or
            is_interface(obj)):
        return '%s.%s' % (module, name)
    return None


_ENV_READERS = ('environ', 'env')


def _env_name(node, constants):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and \
            isinstance(node.left, ast.Constant):
        return node.left.value + 'X'    # 'PYTHON_' + version: PYTHON_X
    return None


def _reads_environment(node):
    """Whether NODE is os.environ, environ, env or os.getenv."""
    if isinstance(node, ast.Attribute):
        return node.attr in _ENV_READERS + ('getenv',)
    return isinstance(node, ast.Name) and node.id in _ENV_READERS


def environment_variables(paths):
    """{name: [file:line, ...]} of the environment variables the Python
    files under PATHS read."""
    found = {}
    files = []
    for path in paths:
        files += [path] if path.endswith('.py') else sorted(
            glob.glob(os.path.join(path, '**', '*.py'), recursive=True))
    for filename in files:
        with open(filename, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename)
        constants = {
            t.id: n.value.value for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            and isinstance(n.value.value, str) for t in n.targets
            if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == 'get' \
                        and _reads_environment(func.value):
                    key = node.args[0]
                elif isinstance(func, ast.Attribute) and \
                        func.attr == 'getenv':
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and \
                    isinstance(node.ctx, ast.Load) and \
                    _reads_environment(node.value):
                key = node.slice
            name = key is not None and _env_name(key, constants)
            if name and re.fullmatch(r'[A-Z][A-Z0-9_]*', name):
                found.setdefault(name, []).append(
                    '%s:%d' % (filename, node.lineno))
    return found


def _type_text(annotation):
    """'str or None' for Optional[str], 'bool' for bool, and so on."""
    if annotation is inspect.Parameter.empty:
        return None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union:
        return ' or '.join('None' if a is type(None) else _type_text(a)
                           for a in args)
    if typing.get_origin(annotation) is not None:
        return re.sub(r'typing\.', '', repr(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return getattr(annotation, '__name__', None) or str(annotation)


def _keywords(func, skip=()):
    """{name: (type text or None, default)} of FUNC's keyword parameters."""
    hints = typing.get_type_hints(func)
    out = {}
    for name, param in inspect.signature(func).parameters.items():
        if name in skip or param.kind in (param.VAR_KEYWORD,
                                          param.VAR_POSITIONAL):
            continue
        out[name] = (_type_text(hints.get(name, param.empty)), param.default)
    return out


def code_settings(source):
    """{name: (type text or None, default)} of one SOURCE of settings."""
    if source == 'initZopeless':
        from canonical.database import config
        from canonical.lp import initZopeless
        settings = _keywords(initZopeless)
        for name, value in _keywords(config.DatabaseConfig.__init__,
                                     skip=('self',)).items():
            settings.setdefault(name, value)
        for name, default in config._BEHAVIOUR_DEFAULTS.items():
            settings.setdefault(name, (None, default))
        return settings
    if source == 'zcml':
        from zope.schema import getFieldsInOrder
        from canonical.database.zcml import IDatabaseDirective
        return {name: (_field_type(field), field.default)
                for name, field in getFieldsInOrder(IDatabaseDirective)}
    if source == 'options':
        return {option_name(o): (_option_type(o), default)
                for o, default in script_options()}
    raise ValueError('unknown source of settings %r' % source)


def _field_type(field):
    return {'TextLine': 'text', 'Text': 'text', 'Bool': 'boolean',
            'Float': 'number', 'Int': 'integer'}.get(type(field).__name__,
                                                     type(field).__name__)


def script_options():
    """[(option, default)] of a LaunchpadScript that offers --dry-run.
    The default is the parser's (logger_options sets some there)."""
    from canonical.launchpad.scripts import LaunchpadScript

    class Script(LaunchpadScript):
        supports_dry_run = True

    parser = Script('docs', test_args=[]).parser
    return [(o, parser.defaults.get(o.dest, o.default))
            for o in parser.option_list]


def _option_type(option):
    if not option.takes_value():
        return 'repeatable flag' if option.action == 'count' else 'flag'
    return option.metavar or {'string': 'text'}.get(option.type,
                                                    option.type)


def option_name(option):
    return ', '.join(option._short_opts + option._long_opts)


def default_text(value):
    if value is inspect.Parameter.empty:
        return 'required'
    if isinstance(value, tuple) and len(value) == 2 and value[0] == 'NO':
        return '(none)'     # optparse's NO_DEFAULT
    return repr(value)


def is_interface(obj):
    return type(obj).__name__ == 'InterfaceClass'


def constant_home(module, name, obj):
    """Where a constant re-exported by a package is defined: the module
    below it that lists it in ``__all__``."""
    if not hasattr(module, '__path__'):
        return None
    for other in walk_modules(module.__name__):
        if other == module.__name__:
            continue
        sub = importlib.import_module(other)
        if name in getattr(sub, '__all__', []) and \
                getattr(sub, name, None) is obj:
            return '%s.%s' % (other, name)
    return None


# -- what the settings page says ---------------------------------------------

def documented_envvars(text):
    """The names of the ``.. envvar::`` directives of an rst TEXT."""
    return re.findall(r'^\.\. envvar:: (\S+)', text, re.M)


def documented_settings(text, source):
    """The names in the content of ``.. settings-table:: SOURCE`` of an rst
    TEXT (the terms of its definition list)."""
    match = re.search(r'^\.\. settings-table:: %s\n\n?((?:   .*\n|\n)*)'
                      % re.escape(source), text, re.M)
    if match is None:
        return []
    return [line.strip().split(' : ')[0] for line in
            match.group(1).splitlines() if re.match(r'   \S', line)]
