"""The generated and checked parts of the reference, as a Sphinx extension.

Nothing in the reference is copied from the code by hand where the code
can say it itself, and what has to be written by hand is checked against
the code at every build, so the documentation cannot drift from it:

``.. api-modules:: PACKAGE``
    An ``automodule`` section for PACKAGE and every module below it (new
    modules appear by themselves); ``:exclude:`` names modules to leave out,
    ``:untitled-root:`` puts PACKAGE itself under the page's own title.
``.. api-exports:: MODULE``
    A table of the names MODULE re-exports (its ``__all__`` entries defined
    elsewhere), each linked to where it is documented.
``.. settings-table:: SOURCE``
    A table of settings with their type, default and meaning.  SOURCE is
    ``initZopeless`` (its keywords, the DatabaseConfig keywords they pass
    on and the behaviour settings), ``zcml`` (the attributes of
    ``<db:database>``, from the directive's schema) or ``options`` (the
    command-line options of a LaunchpadScript).  The directive's content is
    a definition list ``name : type`` followed by the meaning; types and
    defaults the code declares come from the code.  A setting of the code
    that the content lacks (for ``initZopeless``), or a name of the content
    the code lacks, is a warning.

And when every page is read:

- every name in the ``__all__`` of every module of ``zopeless_api_packages``
  is documented (directly, or as the object it re-exports);
- every environment variable the code reads (found by reading the code:
  ``os.environ.get(NAME)``, ``os.environ[NAME]``, ``os.getenv(NAME)``,
  ``environ.get(NAME)``, ``env.get(NAME)``) has an ``.. envvar::``, and
  every ``.. envvar::`` is read by the code or listed in
  ``zopeless_envvars_read_elsewhere``;
- every narrative doctest ``tests/*.txt`` is included in a page.

A miss is a warning, so ``make docs`` (warnings are errors) fails.  What
is read from the code is in zopeless_codefacts.py, which the test suite
uses as well.
"""

import glob
import importlib
import inspect
import os
import re

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from zopeless_codefacts import code_settings
from zopeless_codefacts import constant_home
from zopeless_codefacts import default_text
from zopeless_codefacts import environment_variables
from zopeless_codefacts import is_interface
from zopeless_codefacts import option_name
from zopeless_codefacts import origin
from zopeless_codefacts import public_names
from zopeless_codefacts import script_options
from zopeless_codefacts import walk_modules

__all__ = ['setup']

log = logging.getLogger('zopeless_reference')


# -- directives --------------------------------------------------------------

class ApiModules(SphinxDirective):
    """An automodule section for a package and every module below it."""

    required_arguments = 1
    option_spec = {'exclude': directives.unchanged,
                   'untitled-root': directives.flag}

    def run(self):
        exclude = (self.options.get('exclude') or '').split()
        lines = []
        for name in walk_modules(self.arguments[0], exclude):
            module = importlib.import_module(name)
            interfaces, constants = _special_members(module)
            reexported = [n for n, _ in _reexports(module)]
            title = '``%s``' % name
            if name != self.arguments[0] or \
                    'untitled-root' not in self.options:
                lines += [title, '-' * len(title), '']
            lines += ['.. automodule:: %s' % name,
                      '   :members:', '   :undoc-members:',
                      '   :show-inheritance:']
            # What it re-exports is documented where it is defined, and
            # listed by api-exports here.
            excluded = interfaces + constants + reexported
            if excluded:
                lines.append('   :exclude-members: %s' % ', '.join(excluded))
            lines.append('')
            # autodoc leaves both out of :members: (interfaces are not
            # classes to it, and a constant needs a "#:" comment).
            for iface in interfaces:
                lines += ['.. autointerface:: %s.%s' % (name, iface),
                          '   :members:', '']
            for constant in constants:
                lines += ['.. autodata:: %s.%s' % (name, constant), '']
            if _reexports(module):
                lines += ['.. api-exports:: %s' % name, '']
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(
            lines, source=self.get_source_info()[0]), node)
        return node.children


def _special_members(module):
    """(interfaces, constants) of MODULE's __all__ defined in MODULE."""
    interfaces, constants = [], []
    for name in getattr(module, '__all__', []):
        obj = getattr(module, name)
        where = origin(obj)
        if is_interface(obj) and where == '%s.%s' % (module.__name__, name):
            interfaces.append(name)
        elif where is None and not inspect.ismodule(obj) and \
                not constant_home(module, name, obj):
            constants.append(name)
    return interfaces, constants


def _reexports(module):
    """[(name, target)] of MODULE's __all__ names defined elsewhere; target
    is the documented name, or None when it is another library's."""
    out = []
    for name in getattr(module, '__all__', []):
        obj = getattr(module, name)
        where = origin(obj)
        if where is not None and where != '%s.%s' % (module.__name__, name):
            out.append((name, where if where.startswith('canonical.')
                        else None))
        elif where is None and constant_home(module, name, obj):
            out.append((name, constant_home(module, name, obj)))
    return out


class ApiExports(SphinxDirective):
    """A table of the names a module re-exports, linked to their docs."""

    required_arguments = 1

    def run(self):
        module = importlib.import_module(self.arguments[0])
        rows = []
        for name, target in _reexports(module):
            where = (':py:obj:`%s`' % target if target else
                     'from %s' % getattr(getattr(module, name),
                                         '__module__', 'elsewhere'))
            rows.append(('``%s``' % name, where))
        if not rows:
            return []
        lines = ['.. list-table:: Names also importable from ``%s``'
                 % module.__name__, '   :header-rows: 1',
                 '   :widths: 30 70', '',
                 '   * - name', '     - documented as']
        for name, where in rows:
            lines += ['   * - %s' % name, '     - %s' % where]
        node = nodes.container()
        self.state.nested_parse(StringList(lines), self.content_offset, node)
        return node.children


class SettingsTable(SphinxDirective):
    """Settings with their type, default and meaning; see the module."""

    required_arguments = 1
    has_content = True

    def run(self):
        source = self.arguments[0]
        code = code_settings(source)
        written = self._written()
        where = self.get_location()
        if source == 'initZopeless':
            for name in code:
                if name not in written:
                    log.warning('settings-table %s: %r is a setting of the '
                                'code and is not documented here'
                                % (source, name), location=where)
        for name in written:
            if name not in code:
                log.warning('settings-table %s: %r is documented but is '
                            'not a setting of the code' % (source, name),
                            location=where)
        helps = self._helps(source)
        table = ['.. list-table::', '   :header-rows: 1',
                 '   :widths: 25 12 15 48', '   :width: 100%', '',
                 '   * - name', '     - type', '     - default',
                 '     - meaning']
        for name, (type_text, default) in code.items():
            classifier, meaning = written.get(name, (None, []))
            type_text = type_text or classifier
            if not type_text:
                log.warning('settings-table %s: give the type of %r '
                            '("%s : TYPE")' % (source, name, name),
                            location=where)
            text = [helps.get(name, '')] if helps.get(name) else []
            text += meaning
            if not text:
                log.warning('settings-table %s: %r has no meaning written'
                            % (source, name), location=where)
            table += ['   * - ``%s``' % name,
                      '     - %s' % (type_text or ''),
                      '     - ``%s``' % default_text(default)]
            table += ['     - ' + (text[0] if text else '')]
            table += ['       ' + line for line in text[1:]]
        node = nodes.container(classes=['settings-table'])
        self.state.nested_parse(StringList(table), self.content_offset, node)
        return [node]

    def _written(self):
        """{name: (classifier, [lines of meaning])} of the content."""
        written = {}
        current = None
        for line in self.content:
            if line and not line[0].isspace():
                name, _, classifier = line.partition(' : ')
                current = written[name.strip().strip('`')] = (
                    classifier.strip() or None, [])
            elif current is not None:
                current[1].append(line.strip())
        return {k: (c, [' '.join(t for t in m if t)] if m else [])
                for k, (c, m) in written.items()}

    def _helps(self, source):
        if source == 'zcml':
            from zope.schema import getFieldsInOrder
            from canonical.database.zcml import IDatabaseDirective
            return {name: ' '.join(filter(None, [field.title + '.',
                                                 field.description]))
                    for name, field in getFieldsInOrder(IDatabaseDirective)}
        if source == 'options':
            return {option_name(o): (o.help or '').replace(
                        '%default', str(o.default)).replace('*', r'\*')
                    for o, _ in script_options()}
        return {}


# -- checks when every page is read ------------------------------------------

def _documented_objects(env):
    domain = env.get_domain('py')
    return set(domain.objects)


def check_api_coverage(app, env):
    documented = _documented_objects(env)
    origins = set()
    for fullname in documented:
        origins.add(fullname)
    counted = missing = external = 0
    for package, exclude in app.config.zopeless_api_packages:
        for module_name in walk_modules(package, exclude):
            module = importlib.import_module(module_name)
            for name in public_names(module_name):
                counted += 1
                fullname = '%s.%s' % (module_name, name)
                if fullname in documented:
                    continue
                obj = getattr(module, name)
                where = origin(obj) or constant_home(module, name, obj)
                if where and where in documented:
                    continue
                if where and not where.startswith('canonical.'):
                    external += 1
                    continue
                missing += 1
                log.warning('API reference: %s is public (in __all__) but '
                            'not documented' % fullname)
    log.info('API reference: %d public names, %d documented, %d '
             're-exported from other libraries, %d missing'
             % (counted, counted - missing - external, external, missing))
    app.env.zopeless_api_counts = (counted, missing, external)


def check_environment(app, env):
    root = app.config.zopeless_source_root
    read = environment_variables(
        [os.path.join(root, p) for p in app.config.zopeless_envvar_paths])
    documented = {name.split(' ')[0] for (kind, name) in
                  env.get_domain('std').objects if kind == 'envvar'}
    for name in sorted(set(read) - documented):
        log.warning('environment variable %s is read by the code (%s) but '
                    'has no ".. envvar::"'
                    % (name, ', '.join(os.path.relpath(w, root)
                                       for w in read[name])))
    elsewhere = set(app.config.zopeless_envvars_read_elsewhere)
    for name in sorted(documented - set(read) - elsewhere):
        log.warning('environment variable %s is documented but the code '
                    'does not read it' % name)
    log.info('settings reference: %d environment variables read by the '
             'code, all documented: %s'
             % (len(read), 'yes' if set(read) <= documented else 'no'))


def check_stories(app, env):
    root = app.config.zopeless_source_root
    included = set()
    for deps in env.dependencies.values():
        for dep in deps:
            included.add(os.path.normpath(os.path.join(app.srcdir, dep)))
    for path in sorted(glob.glob(os.path.join(root, 'tests', '*.txt'))):
        if os.path.normpath(path) not in included:
            log.warning('the narrative doctest %s is not included in any '
                        'page' % os.path.relpath(path, root))


def check_everything(app, env):
    check_api_coverage(app, env)
    check_environment(app, env)
    check_stories(app, env)


def section_titles_as_rubrics(app, what, name, obj, options, lines):
    """A docstring's own section titles become rubrics: docutils allows
    no sections inside a description."""
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        if title.strip() and under and len(under) >= len(title.rstrip()) \
                and re.fullmatch(r'([-=~^])\1+', under.strip()):
            lines[i] = '.. rubric:: ' + title.strip()
            lines[i + 1] = ''


def skip_member(app, what, name, obj, skip, options):
    """SQLObject's per-class ``sqlmeta`` is SQLObject's business."""
    if name == 'sqlmeta':
        return True
    return None


def no_docstring_of_the_type(app, what, name, obj, options, lines):
    """A constant has no docstring of its own: autodoc would show its
    type's (dict's, str's)."""
    type_doc = getattr(type(obj), '__doc__', None)
    if not isinstance(type_doc, str):
        return
    type_doc = type_doc.strip()
    if what in ('data', 'attribute') and type_doc and \
            '\n'.join(lines).strip() == inspect.cleandoc(type_doc):
        lines[:] = []


def interface_names_in_signatures(app, what, name, obj, options,
                                  signature, return_annotation):
    """Interfaces in type hints by name: their repr is not a type's."""
    def clean(text):
        return text and re.sub(r'<InterfaceClass ([\w.]+)>', r'\1', text)
    return clean(signature), clean(return_annotation)


def interface_reprs_as_references(app, env, node, contnode):
    """A property's type hint naming an interface reaches the page as the
    interface's repr ("<InterfaceClass a.b.IX> | None"): link it as a.b.IX,
    and show it by its name."""
    match = re.fullmatch(r'<InterfaceClass ([\w.]+)>( \| None)?',
                         node.get('reftarget', ''))
    if match is None:
        return None
    target, rest = match.group(1), match.group(2) or ''
    text = nodes.literal(text=target.rsplit('.', 1)[-1])
    ref = None
    if target.startswith('canonical.'):
        ref = env.get_domain('py').resolve_xref(
            env, node['refdoc'], app.builder, 'class', target, node, text)
    result = nodes.inline()
    result += ref if ref is not None else text
    if rest:
        result += nodes.Text(rest)
    return result


def setup(app):
    app.add_config_value('zopeless_api_packages', [], 'env')
    app.add_config_value('zopeless_source_root', '', 'env')
    app.add_config_value('zopeless_envvar_paths', [], 'env')
    app.add_config_value('zopeless_envvars_read_elsewhere', [], 'env')
    app.add_directive('api-modules', ApiModules)
    app.add_directive('api-exports', ApiExports)
    app.add_directive('settings-table', SettingsTable)
    app.connect('env-check-consistency', check_everything)
    app.connect('autodoc-process-docstring', section_titles_as_rubrics)
    app.connect('autodoc-process-signature', interface_names_in_signatures)
    app.connect('autodoc-process-docstring', no_docstring_of_the_type)
    app.connect('autodoc-skip-member', skip_member)
    app.connect('missing-reference', interface_reprs_as_references)
    return {'parallel_read_safe': True, 'env_version': 1}
