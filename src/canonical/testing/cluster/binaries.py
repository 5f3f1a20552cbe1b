"""Finding the PostgreSQL server binaries and telling their version."""

import glob
import os
import re
import shutil
import subprocess
from typing import Iterator, Optional

from .interfaces import BinariesNotFound, ClusterError

__all__ = ['find_bindir', 'has_server', 'server_version']

SERVER_PROGRAMS = ('initdb', 'pg_ctl', 'postgres')


def _version_key(bindir: str) -> tuple:
    parts = re.findall(r'\d+', os.path.basename(os.path.dirname(bindir)))
    return tuple(int(p) for p in parts)


def has_server(bindir: str) -> bool:
    """True when bindir holds every program the cluster needs."""
    return all(os.access(os.path.join(bindir, prog), os.X_OK)
               for prog in SERVER_PROGRAMS)


def _candidate_bindirs() -> Iterator[str]:
    env = os.environ.get('ZOPELESS_PG_BINDIR')
    if env:
        # An explicit choice: look nowhere else.
        yield env
        return
    pg_config = shutil.which('pg_config')
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, '--bindir'], capture_output=True, text=True,
                timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ''
        if out:
            yield out
    initdb = shutil.which('initdb')
    if initdb:
        yield os.path.dirname(os.path.realpath(initdb))
    # Newest first: a machine with several versions gets the latest.
    for bindir in sorted(glob.glob('/usr/lib/postgresql/*/bin'),
                         key=_version_key, reverse=True):
        yield bindir
    yield '/usr/local/pgsql/bin'


def find_bindir(version: Optional[str] = None) -> str:
    """The directory of the PostgreSQL server binaries.

    With ``version`` (a major version string such as '15'), prefer binaries
    of that version.  Raises BinariesNotFound when there are none.
    """
    found = [d for d in _candidate_bindirs() if has_server(d)]
    if version is not None:
        for d in found:
            if server_version(d).split('.')[0] == str(version):
                return d
        if found:
            # Another major version cannot read this data directory.
            raise ClusterError(
                'the cluster was created by PostgreSQL %s but only PostgreSQL '
                '%s binaries were found (%s); install version %s or remove '
                'the cluster' % (version, server_version(found[0]),
                                 found[0], version))
    if found:
        return found[0]
    raise BinariesNotFound(
        'PostgreSQL server binaries not found (looked at pg_config --bindir, '
        'PATH and /usr/lib/postgresql/*/bin%s); install the Debian package '
        '"postgresql" or set ZOPELESS_PG_BINDIR'
        % (', ZOPELESS_PG_BINDIR' if os.environ.get('ZOPELESS_PG_BINDIR')
           else ''))


# Running ``postgres --version`` costs a process per call; the answer for a
# directory does not change while we run.
_versions: dict = {}


def server_version(bindir: str) -> str:
    """The version of the server in bindir, such as '15.4'; '0' if unknown."""
    if bindir not in _versions:
        try:
            out = subprocess.run(
                [os.path.join(bindir, 'postgres'), '--version'],
                capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ''
        m = re.search(r'(\d+(?:\.\d+)?)', out)
        _versions[bindir] = m.group(1) if m else '0'
    return _versions[bindir]
