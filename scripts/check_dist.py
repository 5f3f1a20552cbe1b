"""Check the sdist and the wheel of DIST against the files git tracks.

    python scripts/check_dist.py dist

- the sdist holds every tracked file but the repository's own plumbing
  (SDIST_LEAVES_OUT);
- the wheel holds every tracked file under src/: the library, the test
  kit and every data file they open;
- the wheel holds nothing outside the canonical package and its
  .dist-info (no benchmarks, tests or other tools);
- the wheel's metadata asks at run time for setup.py's INSTALL_REQUIRES,
  and for nothing else outside an extra.

Prints the non-Python files of the wheel.  Standard library only.
"""

import fnmatch
import glob
import os
import subprocess
import sys
import tarfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pythons import ROOT, setup_py_constant  # noqa: E402

SDIST_LEAVES_OUT = ['.gitignore', '.ci/*']

__all__ = ['main']


def tracked():
    out = subprocess.run(['git', 'ls-files'], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [path for path in out.splitlines()
            if os.path.exists(os.path.join(ROOT, path))]


def one(pattern):
    found = glob.glob(pattern)
    if len(found) != 1:
        raise SystemExit('check_dist: expected one %s, found %s'
                         % (pattern, found or 'none'))
    return found[0]


def sdist_problems(sdist, files):
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = names[0].split('/')[0]
    inside = {name[len(top) + 1:] for name in names}
    return ['sdist lacks %s' % path for path in files
            if path not in inside and not any(
                fnmatch.fnmatch(path, p) for p in SDIST_LEAVES_OUT)]


def wheel_problems(names, files):
    problems = ['wheel lacks %s' % path[len('src/'):] for path in files
                if path.startswith('src/') and path[len('src/'):] not in names]
    for name in names:
        top = name.split('/')[0]
        if top != 'canonical' and not top.endswith('.dist-info'):
            problems.append('wheel holds %s, outside the library' % name)
    return problems


def metadata_problems(wheel, names):
    meta = [n for n in names if n.endswith('.dist-info/METADATA')][0]
    with zipfile.ZipFile(wheel) as z:
        text = z.read(meta).decode('utf-8')
    runtime = sorted(line.split(':', 1)[1].strip() for line in
                     text.splitlines() if line.startswith('Requires-Dist:')
                     and 'extra ==' not in line)
    wanted = setup_py_constant('INSTALL_REQUIRES')

    def key(spec):
        spec = spec.replace(' ', '').replace('(', '').replace(')', '')
        name = spec.split('<')[0].split('>')[0].split('=')[0].split('!')[0]
        return name.lower(), sorted(spec[len(name):].split(','))
    if sorted(map(key, runtime)) != sorted(map(key, wanted)):
        return ['wheel requires at run time %s, setup.py says %s'
                % (runtime, wanted)]
    return []


def main(argv):
    dist = argv[0] if argv else 'dist'
    sdist = one(os.path.join(dist, '*.tar.gz'))
    wheel = one(os.path.join(dist, '*.whl'))
    files = tracked()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    problems = (sdist_problems(sdist, files) + wheel_problems(names, files) +
                metadata_problems(wheel, names))
    for problem in problems:
        print('check_dist: %s' % problem, file=sys.stderr)
    if problems:
        return 1
    data = sorted(n for n in names if n.startswith('canonical/')
                  and not n.endswith('.py'))
    print('check_dist: %s and %s hold what they should; the wheel\'s data '
          'files:' % (os.path.basename(sdist), os.path.basename(wheel)))
    for name in data:
        print('    %s' % name)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
