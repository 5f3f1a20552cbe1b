"""The command line: ``python -m canonical.testing.cluster COMMAND``.

Expected failures print one line on stderr and exit with status 1, so that
scripts and CI logs show the cause rather than a traceback.
"""

import argparse
import errno
import sys
from typing import List, Optional

from .external import external_from_env
from .interfaces import ClusterError
from .server import Cluster

__all__ = ['main']


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m canonical.testing.cluster',
        description='Run the private PostgreSQL cluster of this project.')
    parser.add_argument('command', choices=['start', 'stop', 'status', 'env'])
    parser.add_argument('--base', help='state directory (default: var/)')
    parser.add_argument('--mode', default='fast',
                        choices=['smart', 'fast', 'immediate'],
                        help='shutdown mode for stop')
    parser.add_argument('--fsync', action='store_true', default=None,
                        help='run with fsync=on (default off)')
    args = parser.parse_args(argv)
    try:
        cluster = Cluster(args.base, fsync=args.fsync)
        external = external_from_env(cluster) if args.base is None else None
        if args.command == 'start':
            if external is not None:
                external.start()  # raises: we never start a foreign server
            cluster.start()
            print('cluster running on %s:%s (data: %s)'
                  % (cluster.host, cluster.port, cluster.datadir))
        elif args.command == 'stop':
            if external is not None:
                external.stop()  # raises, likewise
            if cluster.stop(args.mode):
                print('cluster stopped')
            else:
                print('cluster was not running')
        elif args.command == 'status':
            # Exit status 3 for "not running", as in LSB init scripts.
            if external is not None:
                st = external.status()
                print('external server %s:%s (%s)' % (
                    st['host'], st['port'],
                    'accepting connections' if st['running']
                    else 'not reachable'))
                return 0 if st['running'] else 3
            st = cluster.status()
            if not st['initialised']:
                print('not initialised (run: start)')
                return 3
            if st['running']:
                print('running on %s:%s pid %s (data: %s, log: %s)' % (
                    st['host'], st['port'], st['pid'], st['datadir'],
                    st['logfile']))
                return 0
            print('stopped (data: %s)' % st['datadir'])
            return 3
        elif args.command == 'env':
            server = external if external is not None else cluster.start()
            for line in server.env_lines():
                print(line)
    except ClusterError as e:
        print('cluster: error: %s' % e, file=sys.stderr)
        return 1
    except OSError as e:
        where = ' (%s)' % e.filename if e.filename else ''
        if e.errno == errno.ENOSPC:
            print('cluster: error: disk full%s' % where, file=sys.stderr)
        else:
            print('cluster: error: %s%s' % (e.strerror or e, where),
                  file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
