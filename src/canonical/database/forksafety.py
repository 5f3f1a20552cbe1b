"""A connection belongs to the process that opened it.

After ``fork()`` a child shares its parent's sockets.  A child that used an
inherited connection would interleave its protocol messages with the
parent's on one session (each side may then read the other's results); a
child that merely freed one would have libpq send a Terminate message, and
the server would end the parent's session.  So, in every child, right after
the fork (``os.register_at_fork``):

* each psycopg2 connection the library opened in an ancestor has its
  socket descriptor replaced, in the child only, by a socket whose peer is
  already closed.  Whatever later happens to the inherited object there (a
  query, ``close()``, garbage collection at exit) fails or goes nowhere,
  never to the server; the parent's descriptor is untouched;
* the reconnect coordinators start afresh: the parent's describe the
  parent's connections, and their locks may be held by threads that do not
  exist in the child;
* the locks registered with ``renew_after_fork()`` (the transaction
  manager's, initZopeless()'s) are replaced by new ones, for the same
  reason.

``ReconnectingConnection`` records the process generation that opened each
connection (``adopt()``) and treats one opened by another as not
connected, so the child's first ``begin()`` opens its own.  A generation
number, bumped in each child, is compared instead of os.getpid(), which is
a system call on every use.

This covers ``os.fork()``, ``multiprocessing`` pools with the fork start
method and daemons that fork twice.  A child that inherits a transaction in
progress cannot use it (its next statement raises DisconnectionError): fork
between transactions.
"""

from __future__ import annotations

import os
import socket
import weakref
from typing import Any, Callable, Dict

from canonical.database.perdatabase import forget_all

__all__ = ['adopt', 'generation', 'renew_after_fork', 'silence',
           'silenced_count']

# The connections the library opened in this process and may leave to a
# forked child.  Weak: a connection closed and freed needs no silencing.
_opened: 'weakref.WeakSet[Any]' = weakref.WeakSet()
_silenced = 0
_generation = 0
# holder -> {attribute: factory}: what renew_after_fork() registered.
_renewed: 'weakref.WeakKeyDictionary[Any, Dict[str, Callable[[], Any]]]' = \
    weakref.WeakKeyDictionary()


def generation() -> int:
    """This process's generation: 0 in the process that imported the
    library, one more in each process forked from it since."""
    return _generation


def adopt(raw: Any) -> int:
    """Record that this process opened psycopg2 connection ``raw``; return
    the owner's generation, to compare with ``generation()`` before using
    it."""
    _opened.add(raw)
    return _generation


def silence(raw: Any) -> bool:
    """Cut ``raw`` off from the server in this process only: its socket
    descriptor now names a socket whose peer is closed, so nothing written
    to it (a query, libpq's Terminate on close) reaches the server.  True
    when there was a descriptor to replace."""
    if raw.closed:
        return False
    fd = raw.fileno()
    ours, peer = socket.socketpair()
    try:
        peer.close()
        os.dup2(ours.fileno(), fd, inheritable=False)
    finally:
        ours.close()
    return True


def renew_after_fork(holder: Any, name: str,
                     factory: Callable[[], Any]) -> None:
    """In every child forked from now on, set ``holder.<name>`` to
    ``factory()``: a lock that a thread of the parent held at the fork
    would otherwise stay held for ever in the child, where that thread does
    not exist.  ``holder`` is held weakly (a module or an object)."""
    _renewed.setdefault(holder, {})[name] = factory


def silenced_count() -> int:
    """How many inherited connections this process silenced after its
    fork (0 in a process that was not forked from a user of the library).
    """
    return _silenced


def _after_fork_in_child() -> None:
    global _silenced, _generation
    _generation += 1
    inherited = list(_opened)
    _opened.clear()
    _silenced = sum(1 for raw in inherited if silence(raw))
    # The parent's coordinators and prepared-transaction ledgers describe
    # the parent, and their locks may be held by threads that do not exist
    # here.
    forget_all()
    for holder, names in list(_renewed.items()):
        for name, factory in names.items():
            setattr(holder, name, factory())


os.register_at_fork(after_in_child=_after_fork_in_child)
