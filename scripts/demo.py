"""A nightly batch job that survives losing its database mid-run.

The job awards karma to every person of the sample database, one unit of
work per person, each in its own explicit-begin transaction.  It reaches
the database through Twisted's port forwarder; half-way through, the
forwarder is killed and started again two seconds later, cutting every
connection.  The job carries on by itself and finishes with every unit
done exactly once, which the summary checks against the database.
"""

import logging
import sys
import tempfile
import threading
import time

import transaction
from transaction.interfaces import TransientError

from canonical.database.cluster import ClusterError
from canonical.database.cluster import ensure_cluster
from canonical.database.ftests.proxy import PortForwarder
from canonical.database.reconnect import coordinator_for
from canonical.launchpad.database import Person
from canonical.launchpad.ftests.harness import LaunchpadTestSetup
from canonical.lp import initZopeless

OUTAGE_AFTER_UNIT = 8
OUTAGE_SECONDS = 2.0


def say(message, *args):
    print('%s  %s' % (time.strftime('%H:%M:%S'), message % args), flush=True)


def cut_the_link(proxy, started):
    """Kill the forwarder once the job is under way, restart it later."""
    started.wait()
    proxy.stop()
    say('>>> database link cut (port forwarder killed)')
    time.sleep(OUTAGE_SECONDS)
    proxy.start()
    say('>>> port forwarder running again')


def award(ztm, person_id, unit, outage_started):
    """One unit of work, run again as a whole when the link dies under it.

    Returns the person's name and how many times the unit was retried.
    """
    tries = 0
    for attempt in transaction.manager.attempts(5):
        with attempt:
            tries += 1
            try:
                if unit == OUTAGE_AFTER_UNIT + 1 and tries == 1:
                    outage_started.set()
                    time.sleep(0.3)  # the link dies while this unit is open
                person = Person.get(person_id)
                person.karma = person.karma + 10
                ztm.connection().execute(
                    'INSERT INTO karma_award (unit, person) VALUES (%s, %s)',
                    (unit, person_id))
            except TransientError as e:
                say('unit %2d failed (%s: %s); running it again', unit,
                    type(e).__name__, str(e).splitlines()[0])
                raise
    return person.name, tries - 1


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format='%(asctime)s  [%(levelname)s] %(message)s',
                        datefmt='%H:%M:%S')
    try:
        server = ensure_cluster()
    except ClusterError as e:
        print('demo: %s' % e, file=sys.stderr)
        return 1
    setup = LaunchpadTestSetup(dbname='launchpad_demo')
    setup.setUp()
    workdir = tempfile.mkdtemp(prefix='zopeless-demo-')
    proxy = PortForwarder(server.host, server.port, directory=workdir)
    proxy.start()
    ztm = initZopeless(dbname='launchpad_demo', dbuser=setup.dbuser,
                       dbhost='127.0.0.1 port=%d' % proxy.port,
                       implicitBegin=False, resolve_commit_outcome=True)
    try:
        return run_job(ztm, proxy)
    finally:
        ztm.uninstall()
        proxy.stop()
        setup.tearDown()


def run_job(ztm, proxy):
    ztm.begin()
    ztm.connection().execute(
        'CREATE TABLE karma_award (unit integer PRIMARY KEY, '
        'person integer NOT NULL REFERENCES person)')
    people = [p.id for p in Person.select(orderBy='id')]
    karma_before = sum(p.karma for p in Person.select())
    ztm.commit()
    say('Awarding karma to %d people, one transaction each, through %s.',
        len(people), ztm.config.describe())

    outage_started = threading.Event()
    cutter = threading.Thread(target=cut_the_link,
                              args=(proxy, outage_started))
    cutter.start()
    retries = 0
    started = time.monotonic()
    try:
        for unit, person_id in enumerate(people, 1):
            name, retried = award(ztm, person_id, unit, outage_started)
            retries += retried
            say('unit %2d done: %s', unit, name)
    finally:
        outage_started.set()
        cutter.join()
    elapsed = time.monotonic() - started

    ztm.begin()
    rows, distinct = ztm.connection().execute(
        'SELECT count(*), count(DISTINCT unit) FROM karma_award').fetchone()
    karma_after = sum(p.karma for p in Person.select())
    ztm.abort()
    coordinator = coordinator_for(ztm.config)
    exactly_once = (rows == distinct == len(people) and
                    karma_after - karma_before == 10 * len(people))
    print()
    print('Summary')
    print('  units of work       %d' % len(people))
    print('  units in database   %d (%d distinct)' % (rows, distinct))
    print('  karma awarded       %d (expected %d)'
          % (karma_after - karma_before, 10 * len(people)))
    print('  units retried       %d' % retries)
    print('  downtime            %.2f s' % coordinator.last_downtime)
    print('  job took            %.2f s' % elapsed)
    print('  exactly once        %s' % ('yes' if exactly_once else 'NO'))
    return 0 if exactly_once and retries else 1


if __name__ == '__main__':
    sys.exit(main())
