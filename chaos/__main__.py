"""``bin/chaos``: run the soak, print the table, write the JSON report;
exit 0 when the audit passed, 1 when it failed and 2 when the soak could
not run."""

import argparse
import os
import random
import sys

from chaos.topology import TOPOLOGY_KINDS, descriptions, topology_for
from canonical.testing.cluster import default_base

ALL_KINDS = tuple(k for kinds in TOPOLOGY_KINDS.values() for k in kinds)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='bin/chaos',
        description='Chaos soak of the Zopeless library with an exact '
                    'audit.')
    parser.add_argument('--duration', type=float, default=60.0,
                        help='seconds of faults and work (default 60)')
    parser.add_argument('--workers', type=int, default=8)
    parser.add_argument('--readers', type=int, default=0,
                        help='threads running read units under '
                        'StandbyDatabasePolicy, each checking that the '
                        "workers' last commits are there (default: 0)")
    parser.add_argument('--seed', default=None,
                        help='seed of the fault schedule and the workload '
                             '(default: random, printed)')
    parser.add_argument('--no-resolve', action='store_true',
                        help='run without resolve_commit_outcome: commits '
                             'cut off in flight are reported ambiguous')
    parser.add_argument('--topology', choices=sorted(TOPOLOGY_KINDS),
                        default=None,
                        help='; '.join(
                            '%s: %s' % item for item in descriptions().items())
                        + ' (default: the one of --faults, else single)')
    parser.add_argument('--faults', default=None,
                        help='comma-separated fault kinds (default: all '
                             'of the topology): ' + '; '.join(
                                 '%s: %s' % (name, ', '.join(kinds))
                                 for name, kinds in TOPOLOGY_KINDS.items())
                             + '; "none" for none')
    parser.add_argument('--rounds', type=int, default=None,
                        help='go on after --duration until every kind '
                             'came up this many times')
    parser.add_argument('--interval', type=float, default=1.5,
                        help='mean seconds between faults (default 1.5)')
    parser.add_argument('--reconnect-timeout', type=float, default=None,
                        help='reconnect_timeout of the manager (default: '
                             'wait for ever)')
    parser.add_argument('--accounts', type=int, default=50)
    parser.add_argument('--durability-units', type=int, default=100,
                        help='units of the crash-durability case (0: skip)')
    parser.add_argument('--json', default=None,
                        help='report file (default var/chaos-report.json)')
    parser.add_argument('--base', default=None,
                        help='directory of the throwaway cluster')
    parser.add_argument('--keep', action='store_true',
                        help='keep the cluster (it is kept anyway when '
                             'the audit fails)')
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else str(
        random.randrange(10**6))
    if args.faults is None:
        kinds = TOPOLOGY_KINDS[args.topology or 'single']
    elif args.faults in ('', 'none'):
        kinds = ()
    else:
        kinds = tuple(k.strip() for k in args.faults.split(',')
                      if k.strip())
    unknown = set(kinds) - set(ALL_KINDS)
    if unknown:
        parser.error('unknown fault kinds: %s' % ', '.join(sorted(unknown)))
    try:
        topology = args.topology or topology_for(kinds)
    except ValueError as e:
        parser.error(str(e))
    if set(kinds) - set(TOPOLOGY_KINDS[topology]):
        parser.error('fault kinds %s are not of topology %s' % (
            ', '.join(sorted(set(kinds) - set(TOPOLOGY_KINDS[topology]))),
            topology))
    json_path = args.json or os.path.join(default_base(),
                                          'chaos-report.json')
    from chaos.report import table
    from chaos.soak import run_soak
    try:
        report = run_soak(
            duration=args.duration, workers=args.workers, seed=seed,
            resolve=not args.no_resolve, kinds=kinds,
            interval=args.interval, accounts=args.accounts,
            durability_units=args.durability_units, base=args.base,
            keep=args.keep, json_path=json_path,
            reconnect_timeout=args.reconnect_timeout,
            topology=topology, rounds=args.rounds, readers=args.readers,
            echo=lambda text: print(text, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - reported
        print('chaos: error: %s: %s' % (type(e).__name__, e),
              file=sys.stderr)
        return 2
    print(table(report))
    print('report: %s' % json_path)
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
