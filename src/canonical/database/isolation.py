"""Isolation levels, named once for the whole library.

``canonical.lp`` re-exports these names for scripts written against the
original API.
"""

__all__ = [
    'AUTOCOMMIT_ISOLATION',
    'READ_COMMITTED_ISOLATION',
    'REPEATABLE_READ_ISOLATION',
    'SERIALIZABLE_ISOLATION',
    'ISOLATION_LEVELS',
    'normalize_isolation',
]

AUTOCOMMIT_ISOLATION = 'autocommit'
READ_COMMITTED_ISOLATION = 'read_committed'
REPEATABLE_READ_ISOLATION = 'repeatable_read'
SERIALIZABLE_ISOLATION = 'serializable'

ISOLATION_LEVELS = (
    AUTOCOMMIT_ISOLATION,
    READ_COMMITTED_ISOLATION,
    REPEATABLE_READ_ISOLATION,
    SERIALIZABLE_ISOLATION,
)

# Spellings seen in SQL and in psycopg2 code, accepted for convenience.
_ALIASES = {
    'read committed': READ_COMMITTED_ISOLATION,
    'repeatable read': REPEATABLE_READ_ISOLATION,
    'default': READ_COMMITTED_ISOLATION,
}


def normalize_isolation(level: object) -> str:
    """Return the canonical name of ``level``; raise ConfigurationError."""
    from canonical.database.interfaces import ConfigurationError
    if isinstance(level, str):
        key = level.strip().lower().replace('-', '_')
        if key in ISOLATION_LEVELS:
            return key
        if key.replace('_', ' ') in _ALIASES:
            return _ALIASES[key.replace('_', ' ')]
    raise ConfigurationError(
        'Unknown isolation level %r; use one of %s.'
        % (level, ', '.join(ISOLATION_LEVELS)))
