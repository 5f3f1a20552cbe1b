"""Results: entries, ratios, the terminal table and results.json."""

import contextlib
import json
import os
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'results.json')


class Progress:
    """One line on stderr, rewritten as the run goes."""

    def __init__(self, total):
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, what):
        self.done += 1
        self.show(what)

    def show(self, what):
        line = '[%3d/%d %5.0fs] %s' % (self.done, self.total,
                                       time.monotonic() - self.started, what)
        if self.tty:
            sys.stderr.write('\r\033[K' + line)
        else:
            sys.stderr.write(line + '\n')
        sys.stderr.flush()

    def finish(self):
        if self.tty:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()


class Results:
    def __init__(self):
        self.entries = []

    def add(self, system, workload, metric, median, unit, p95=None,
            floor=None, **extra):
        entry = dict(system=system, workload=workload, metric=metric,
                     median=median, p95=p95, unit=unit, ratio=None,
                     ratio_to=floor)
        entry.update(extra)
        self.entries.append(entry)
        return entry

    def compute_ratios(self):
        for e in self.entries:
            floor = e.get('ratio_to')
            if not floor:
                continue
            ref = [x for x in self.entries
                   if x['system'] == floor and x['workload'] == e['workload']
                   and x['metric'] == e['metric']]
            if ref and ref[0]['median'] and e['median'] is not None:
                e['ratio'] = e['median'] / ref[0]['median']

    def find(self, system, workload, metric):
        for e in self.entries:
            if (e['system'], e['workload'], e['metric']) == (
                    system, workload, metric):
                return e
        return None

    def save(self, path=RESULTS, meta=None):
        with open(path, 'w') as f:
            json.dump(self.entries, f, indent=1)
            f.write('\n')
        if meta is not None:
            with open(path.replace('.json', '-meta.json'), 'w') as f:
                json.dump(meta, f, indent=1)
                f.write('\n')

    def save_section(self, path, workload, meta):
        """Replace the entries of ``workload`` in the results at ``path``
        (and its key in the meta file) by this run's, keeping the rest."""
        entries, extra = [], {}
        with contextlib.suppress(OSError, ValueError):
            with open(path) as f:
                entries = [e for e in json.load(f)
                           if e.get('workload') != workload]
        meta_path = path.replace('.json', '-meta.json')
        with contextlib.suppress(OSError, ValueError):
            with open(meta_path) as f:
                extra = json.load(f)
        extra[workload] = meta
        merged = Results()
        merged.entries = entries + [e for e in self.entries
                                    if e['workload'] == workload]
        merged.save(path, meta=extra)

    def table(self):
        rows = [('workload', 'metric', 'system', 'median', 'p95', 'unit',
                 'ratio', 'vs')]
        for e in self.entries:
            rows.append((e['workload'], e['metric'], e['system'],
                         _fmt(e['median']), _fmt(e['p95']), e['unit'],
                         '' if e['ratio'] is None else '%.2f' % e['ratio'],
                         e['ratio_to'] or ''))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        previous = None
        for n, r in enumerate(rows):
            if n > 1 and r[0] != previous:
                lines.append('')
            previous = r[0] if n else None
            lines.append('  '.join(
                c.rjust(w) if 3 <= i <= 4 or i == 6 else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths))).rstrip())
            if n == 0:
                lines.append('  '.join('-' * w for w in widths))
        return '\n'.join(lines)


def _fmt(value):
    if value is None:
        return ''
    if isinstance(value, float):
        if value == 0:
            return '0'
        if abs(value) >= 100:
            return '%.0f' % value
        if abs(value) >= 1:
            return '%.2f' % value
        return '%.4f' % value
    return str(value)
