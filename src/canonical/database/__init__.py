"""Zopeless database access: SQLObject models on PostgreSQL, one
reconnecting transaction manager per process.  See interfaces.py."""
