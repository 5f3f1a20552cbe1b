"""Where a cluster's files go, who runs its server, and on which port.

The decisions are recorded in the state file (``cluster.json``) under the
base directory, so that every later process, whoever runs it, finds the
same cluster; a lock file serialises the processes that change it.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
from typing import Iterable, Iterator, Optional

from .interfaces import ClusterError
from .process import last_error

__all__ = ['ServerAddress', 'HOST', 'SUPERUSER', 'STATE_FILE', 'LOCK_FILE', 'default_base',
           'port_free', 'pick_port', 'atomic_write', 'Layout']

HOST = '127.0.0.1'
SUPERUSER = 'postgres'
UNPRIVILEGED_USER = 'zopeless-pg'
STATE_FILE = 'cluster.json'
LOCK_FILE = 'cluster.lock'
PORT_RANGE = (20000, 30000)
# A unix socket path must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_DIR = 80


def _repo_root() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    # src/canonical/testing/cluster/ is four levels below the checkout.
    root = os.path.normpath(os.path.join(here, *[os.pardir] * 4))
    if os.path.exists(os.path.join(root, 'setup.py')):
        return root
    return None


def default_base() -> str:
    """The directory holding the cluster state: ``$ZOPELESS_VAR`` or var/."""
    env = os.environ.get('ZOPELESS_VAR')
    if env:
        return os.path.abspath(env)
    root = _repo_root()
    if root is None:
        return os.path.abspath('var')
    return os.path.join(root, 'var')


def port_free(port: int) -> bool:
    """True when a server could listen on port of HOST now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # PostgreSQL itself sets SO_REUSEADDR, so sockets in TIME_WAIT do
        # not keep it from binding; do the same here.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def pick_port(avoid: Iterable[int] = ()) -> int:
    """A free port of PORT_RANGE not in avoid."""
    # Random rather than sequential, so that clusters of parallel test runs
    # rarely race for the same port.
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        if port not in avoid and port_free(port):
            return port
    raise ClusterError('no free TCP port found on %s in %d-%d'
                       % ((HOST,) + PORT_RANGE))


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Replace path by text so that readers never see half a file."""
    tmp = '%s.tmp%d' % (path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class ServerAddress:
    """How clients reach a server with ``host``, ``port``, ``superuser``."""

    host: str
    port: int
    superuser: str

    def dsn(self, dbname: str = 'postgres', user: Optional[str] = None) -> str:
        return 'host=%s port=%s user=%s dbname=%s' % (
            self.host, self.port, user or self.superuser, dbname)

    def env_lines(self) -> list:
        return ['export PGHOST=%s' % self.host,
                'export PGPORT=%s' % self.port,
                'export PGUSER=%s' % self.superuser]


class Layout(ServerAddress):
    """The files of a cluster under ``base`` and the user owning them."""

    def __init__(self, base: Optional[str] = None):
        self.base = os.path.abspath(base or default_base())
        self.state_path = os.path.join(self.base, STATE_FILE)
        self._state = self._load_state()

    # -- state --------------------------------------------------------------

    def _load_state(self) -> dict:
        # A missing or damaged state file means a cluster to plan afresh.
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        os.makedirs(self.base, exist_ok=True)
        atomic_write(self.state_path,
                     json.dumps(self._state, indent=2, sort_keys=True) + '\n')

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        os.makedirs(self.base, exist_ok=True)
        fd = os.open(os.path.join(self.base, LOCK_FILE),
                     os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another process may have changed the state while we waited.
            self._state = self._load_state()
            yield
        finally:
            os.close(fd)

    # -- paths --------------------------------------------------------------

    @property
    def area(self) -> str:
        """The directory holding data/, run/ and server.log."""
        return self._state.get('area') or os.path.join(self.base, 'pg')

    @property
    def datadir(self) -> str:
        return os.path.join(self.area, 'data')

    @property
    def rundir(self) -> str:
        """The unix socket directory."""
        return self._state.get('rundir') or os.path.join(self.area, 'run')

    @property
    def logfile(self) -> str:
        return os.path.join(self.area, 'server.log')

    @property
    def port(self) -> Optional[int]:
        return self._state.get('port')

    @property
    def host(self) -> str:
        """The address the server listens on: loopback, or the address of
        the network namespace it runs in."""
        return self._state.get('host') or HOST

    @property
    def netns(self) -> Optional[str]:
        """The network namespace the server runs in, or None."""
        return self._state.get('netns')

    @property
    def runas(self) -> Optional[str]:
        """The OS user the server runs as, or None for the caller."""
        return self._state.get('runas')

    def is_initialised(self) -> bool:
        return os.path.exists(os.path.join(self.area, 'initialised'))

    # -- the server user ----------------------------------------------------

    def _user_kwargs(self) -> dict:
        """subprocess.run() arguments that run a child as the server user."""
        if os.geteuid() != 0:
            return {}
        if self.runas is not None:
            pw = pwd.getpwnam(self.runas)
            return dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        # Root controlling a cluster that an ordinary user created.
        try:
            st = os.stat(self.area)
        except OSError:
            return {}
        if st.st_uid == 0:
            return {}
        return dict(user=st.st_uid, group=st.st_gid, extra_groups=[])

    def _chown(self, path: str) -> None:
        kw = self._user_kwargs()
        if kw:
            os.chown(path, kw['user'], kw['group'])

    def _mkdir_owned(self, path: str, mode: int) -> None:
        os.makedirs(path, mode=mode, exist_ok=True)
        # makedirs() leaves an existing directory's mode alone.
        os.chmod(path, mode)
        self._chown(path)

    def _choose_runas(self) -> Optional[str]:
        # PostgreSQL refuses to run as root.
        if os.geteuid() != 0:
            return None
        wanted = os.environ.get('ZOPELESS_PG_USER')
        names = [wanted] if wanted else ['postgres', UNPRIVILEGED_USER]
        for name in names:
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                pass
        name = names[-1]
        useradd = shutil.which('useradd') or '/usr/sbin/useradd'
        try:
            result = subprocess.run(
                [useradd, '--system', '--user-group', '--no-create-home',
                 '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin',
                 name], capture_output=True, text=True)
        except OSError as e:
            raise ClusterError('cannot create user %s: %s' % (name, e))
        if result.returncode not in (0, 9):  # 9: already exists (a race)
            raise ClusterError('cannot create user %s: %s'
                               % (name, last_error(result.stderr)))
        return name

    def _user_can_reach(self, user: str, path: str) -> bool:
        # Asking the kernel, as that user, is the only reliable test: ACLs,
        # group membership and every parent directory all matter.
        pw = pwd.getpwnam(user)
        try:
            result = subprocess.run(
                ['/bin/sh', '-c', 'cd "$1"', 'sh', path], cwd='/',
                user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                capture_output=True)
        except OSError:
            return False
        return result.returncode == 0

    def _plan_layout(self) -> None:
        """Decide, once, where the files go and who runs the server."""
        os.makedirs(self.base, exist_ok=True)
        if 'area' in self._state and 'runas' in self._state:
            return
        runas = self._choose_runas()
        area = os.path.join(self.base, 'pg')
        if runas is not None and not self._user_can_reach(runas, self.base):
            digest = hashlib.sha1(
                os.path.realpath(self.base).encode()).hexdigest()[:10]
            area = os.path.join('/var/tmp', 'zopeless-' + digest)
        rundir = os.path.join(area, 'run')
        if len(rundir) > MAX_SOCKET_DIR:
            digest = hashlib.sha1(area.encode()).hexdigest()[:10]
            rundir = os.path.join('/tmp', 'zopeless-run-' + digest)
        self._state.update(area=area, rundir=rundir, runas=runas)
        self._save_state()
