"""Work for forked children in the fork tests: importable, so that a
``multiprocessing`` pool can be handed it.

Each function uses the transaction manager its process inherited from the
parent that called initZopeless(implicitBegin=False).
"""

from __future__ import annotations

import os
from typing import Any, Dict

from canonical.database import forksafety
from canonical.launchpad.database import Person

__all__ = ['transactions', 'elsewhere_then_reinstall', 'in_child',
           'result_of']


def transactions(count: int) -> Dict[str, Any]:
    """Run ``count`` transactions (a read and an increment of karma
    each); report the backends they ran on and every error."""
    from canonical.lp import installedTransactionManager
    ztm = installedTransactionManager()
    backends, errors = set(), []
    for i in range(count):
        try:
            ztm.begin()
            db = ztm.connection()
            backends.add(db.execute('SELECT pg_backend_pid()').fetchone()[0])
            if Person.get(2).name != 'lifeless':
                raise AssertionError('another process answered')
            db.execute('UPDATE person SET karma = karma + 1 WHERE id = 2')
            ztm.commit()
        except Exception as e:
            errors.append('%s: %s' % (type(e).__name__, e))
            ztm.abort()
    return {'pid': os.getpid(), 'backends': sorted(backends),
            'errors': errors, 'silenced': forksafety.silenced_count()}


def elsewhere_then_reinstall(count: int) -> Dict[str, Any]:
    """Run ``count`` transactions in a new thread (its set-up takes the
    manager's lock), then uninstall the manager and install it again
    (which take the manager's and initZopeless()'s locks), as a worker
    that ends its job and starts the next would; report as
    transactions() does."""
    import threading
    from canonical.lp import initZopeless, installedTransactionManager
    results: list = []
    thread = threading.Thread(target=lambda: results.append(
        transactions(count)))
    thread.start()
    thread.join()
    ztm = installedTransactionManager()
    ztm.uninstall()
    initZopeless(implicitBegin=False).uninstall()
    return results[0]


def in_child(work: Any, *args: Any) -> 'tuple[int, int]':
    """Fork; the child runs ``work(*args)``, writes its repr to a pipe and
    leaves with os._exit().  Returns (pid, read end of the pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            try:
                result = work(*args)
            except BaseException as e:
                result = 'child failed: %r' % (e,)
            os.write(write, repr(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    return pid, read


def result_of(pid: int, read: int, timeout: float = 60.0) -> Any:
    """What the child of in_child() reported, once it has exited.  A child
    silent for ``timeout`` seconds is killed, and AssertionError raised."""
    import ast
    import select
    import signal
    with os.fdopen(read) as f:
        if not select.select([f], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError('child %d hung' % pid)
        text = f.read()
    os.waitpid(pid, 0)
    return ast.literal_eval(text)
