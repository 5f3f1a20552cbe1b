"""A node's own server settings and client networks, kept in its state.

A plain cluster has none: its zopeless.conf holds the port and fsync only,
and its pg_hba.conf lets loopback clients in.  A replication node, or a
server in a network namespace, records here what it needs beyond that
(listening address, socket directory, replication, fencing, synchronous
standbys); they are written at every start, and a running server reloads
them when they change.
"""

import os
import time
from typing import Any, Dict, List, Optional

from . import conf
from .interfaces import ClusterError
from .layout import Layout, atomic_write

__all__ = ['NodeSettings']


class NodeSettings(Layout):
    """Settings of the server whose files ``Layout`` describes.

    The class using it provides ``fsync``, ``is_running()``,
    ``is_initialised()``, ``pg_ctl()``, ``psql()`` and ``_lock()``.
    """

    def settings(self) -> Dict[str, Any]:
        return dict(self._state.get('settings') or {})

    def networks(self) -> List[str]:
        """The client networks of pg_hba.conf, loopback first."""
        extra = [n for n in self._state.get('networks') or ()
                 if n not in conf.LOOPBACK_NETWORKS]
        return list(conf.LOOPBACK_NETWORKS) + extra

    @property
    def replication(self) -> bool:
        """True when standbys may connect (pg_hba.conf)."""
        return bool(self._state.get('replication'))

    def configure(self, **settings: Any) -> None:
        with self._lock():
            current = self.settings()
            for name, value in settings.items():
                if value is None:
                    current.pop(name, None)
                else:
                    current[name] = value
            self._state['settings'] = current
            self._save_state()
            if self.is_initialised() and self._write_conf(self.port) \
                    and self.is_running():
                self._reload()

    def allow(self, network: str, replication: bool = False) -> None:
        with self._lock():
            networks = list(self._state.get('networks') or ())
            if network not in networks:
                networks.append(network)
            self._state['networks'] = networks
            if replication:
                self._state['replication'] = True
            self._save_state()
            if self.is_initialised() and self._write_hba() \
                    and self.is_running():
                self._reload()

    def _start_settings(self) -> Dict[str, Any]:
        """What zopeless.conf holds beyond port and fsync."""
        return self.settings()

    def _reload(self, timeout: float = 30) -> None:
        """Reload the configuration and wait until the server has: new
        sessions see it, and every session has been signalled to read it
        before its next statement."""
        query = 'SELECT pg_conf_load_time()'
        before = self.psql(query)
        self.pg_ctl('reload', check=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.psql(query) == before:
            if time.monotonic() > deadline:
                raise ClusterError('%r did not reload its configuration'
                                   % self)
            time.sleep(0.01)

    def _hba_text(self) -> str:
        return conf.hba(self._auth_method(), self.networks(),
                        self.replication)

    def _auth_method(self) -> str:
        return self._state.get('auth_method') or 'scram-sha-256'

    def _write_hba(self, datadir: Optional[str] = None) -> bool:
        """Write pg_hba.conf; True when it changed."""
        return self._write_owned(os.path.join(datadir or self.datadir,
                                              'pg_hba.conf'),
                                 self._hba_text())

    def _write_conf(self, port: Optional[int]) -> bool:
        """Write the per-start settings; True when the file changed."""
        text = conf.start_settings(port, self.fsync, self._start_settings())
        return self._write_owned(os.path.join(self.datadir, conf.START_CONF),
                                 text)

    def _write_owned(self, path: str, text: str) -> bool:
        try:
            with open(path) as f:
                if f.read() == text:
                    return False
        except OSError:
            pass
        atomic_write(path, text, 0o600)
        self._chown(path)
        return True
