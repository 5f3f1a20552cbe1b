"""bin/bench's command line: the options and the run's settings."""

import argparse
import os

from benchmarks.registry import only_help

__all__ = ['FULL', 'QUICK', 'parse_args']

FULL = dict(rounds=7, duration=1.0, outages=20, herd_outage=5.0, down=0.3)
QUICK = dict(rounds=5, duration=0.15, outages=3, herd_outage=1.5, down=0.2)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='bin/bench',
        description='Throughput, round trips, recovery, herd and memory of '
                    'the library against raw psycopg2, SQLObject alone, the '
                    '2005 strategy, zope.sqlalchemy and Storm.')
    parser.add_argument('--quick', action='store_true',
                        help='fewer rounds and outages (well under 2 min)')
    parser.add_argument('--only', default='',
                        help='comma-separated workloads to run (%s)'
                        % only_help())
    parser.add_argument('--profile', action='store_true',
                        help='then print where the library spends a '
                             'healthy transaction: begin(), statement and '
                             'commit() times, client CPU against raw '
                             'psycopg2, and cProfile per transaction of the '
                             'library, transaction and psycopg2 (see '
                             'benchmarks/profiling.py)')
    parser.add_argument('--output', default=None,
                        help='where to write results.json')
    # A positional "quick", as older commands wrote it.
    parser.add_argument('mode', nargs='?', choices=['quick', 'full'],
                        default='full', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == 'quick' or os.environ.get('BENCH_QUICK'):
        args.quick = True
    return args
