"""The end of a bin/bench run: ratios, results.json, and what the terminal
shows (the table, the targets, the sections' summaries)."""

import os
import platform

__all__ = ['write_and_show', 'check_targets']

HERE = os.path.dirname(os.path.abspath(__file__))


def write_and_show(run, chosen, alone):
    """Save ``run``'s results and print the report.  ``chosen`` are the
    sections that ran; ``alone`` when none needed the cluster: each then
    replaces only its own figures and keeps the rest."""
    results, extra = run.results, run.extra
    # Ratios a section fixed itself (the round trips') survive the
    # general computation.
    fixed = [e for e in results.entries if e.pop('_fixed', False)]
    saved = {id(e): (e['ratio'], e['ratio_to']) for e in fixed}
    results.compute_ratios()
    for e in fixed:
        e['ratio'], e['ratio_to'] = saved[id(e)]
    output = run.args.output or os.path.join(HERE, 'results.json')
    if alone:
        for section in chosen:
            results.save_section(output, section.name, extra[section.name])
    else:
        results.save(output, meta=extra)
    print(results.table())
    if not alone:
        print()
        print(check_targets(results, run.sections))
    for section in chosen:
        block = section.summary(results)
        if block is not None:
            print()
            print(block)
    if run.problems:
        print('\nAnchors unavailable: %s' % run.problems)
    else:
        print('\nStorm %s and storm.zope.zstorm import on Python %s.' % (
            _version('storm'), platform.python_version()))
    if 'machine' in extra:
        from benchmarks.machine import summary
        print(summary(extra['machine'], extra.get('machine_during')))
    shown = os.path.relpath(output)
    print('%s run, %.0f s, results in %s' % (
        'quick' if run.args.quick else 'full', extra['seconds'],
        output if shown.startswith(os.pardir) else shown))


def check_targets(results, sections):
    """The 'Targets:' block: each section's lines, in targets order."""
    lines = ['Targets:']
    for section in sorted(sections, key=lambda s: s.targets_order):
        lines.extend(section.targets(results))
    return '\n'.join(lines)


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return '?'
