"""Benchmarks of the Zopeless transaction manager against raw psycopg2,
SQLObject alone, the 2005 reconnect strategy, zope.sqlalchemy and Storm.

Run ``bin/bench`` (or ``bin/python -m benchmarks``), with ``--quick`` for
a short run; see cli.py for the options.  Each section is a module of
sections/ that registers itself (registry.py); run.py runs the wanted ones.
"""
