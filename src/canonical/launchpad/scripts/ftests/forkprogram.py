"""A program that forks in the middle of a transaction, for the fork tests.

``python -m canonical.launchpad.scripts.ftests.forkprogram MODE``, MODE:

``exit``    the child works, then ends through the interpreter's normal
            exit, which frees whatever it inherited;
``close``   the child closes the inherited psycopg2 connection itself
            first, as careless code would;
``daemon``  the child forks again and leaves; the grandchild, in a session
            of its own, works and ends normally.

The parent then carries on with its transaction and prints one JSON line:
its backend before and after, the child's report, and the value its
transaction committed.
"""

from __future__ import annotations

import json
import os
import sys

from canonical.launchpad.database import Person
from canonical.launchpad.scripts.ftests.forkwork import transactions
from canonical.lp import initZopeless


def child(mode: str, inherited, write: int) -> None:
    if mode == 'daemon':
        if os.fork():
            os._exit(0)
        os.setsid()
    if mode == 'close':
        inherited.close()
    from canonical.lp import installedTransactionManager
    installedTransactionManager().abort()  # the parent's, not ours
    os.write(write, json.dumps(transactions(5)).encode())
    os.close(write)
    sys.exit(0)


def main(mode: str) -> None:
    ztm = initZopeless(implicitBegin=False)
    ztm.begin()
    db = ztm.connection()
    before = db.raw.info.backend_pid
    Person.get(1).karma = 777
    raw = db.raw
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        child(mode, raw, write)
    os.close(write)
    with os.fdopen(read) as f:
        report = json.loads(f.read() or '{}')  # EOF: the worker is gone
    os.waitpid(pid, 0)
    after = db.execute('SELECT pg_backend_pid()').fetchone()[0]
    ztm.commit()
    ztm.begin()
    karma = Person.get(1).karma
    ztm.abort()
    ztm.uninstall()
    print(json.dumps({'before': before, 'after': after, 'child': report,
                      'karma': karma}))


if __name__ == '__main__':
    main(sys.argv[1])
