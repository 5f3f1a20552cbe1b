"""Benchmarks of the Zopeless transaction manager against raw psycopg2,
SQLObject alone, the 2005 reconnect strategy, zope.sqlalchemy and Storm.

Run ``bin/python -m benchmarks`` (or ``bin/python benchmarks/__main__.py``),
with ``--quick`` for a short run; see run.py for the options.
"""
