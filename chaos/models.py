"""The ledger the soak writes: accounts and the transfers between them.

Every unit of work inserts one ``chaos_transfer`` row carrying its
client-side uid and moves its amount from one account to another, so

* a uid found twice is a duplicated unit, a uid missing a lost one;
* the sum of the balances never changes;
* each balance equals its opening balance plus what the transfer rows say
  came in, minus what went out (the row and the balance updates are one
  transaction or nothing).

``uid`` is deliberately not unique: a duplicate must be seen by the audit,
not turned into an error by the database.
"""

from __future__ import annotations

from sqlobject import IntCol
from sqlobject import StringCol

from canonical.database.sqlbase import SQLBase

__all__ = ['Account', 'Transfer', 'SCHEMA', 'OPENING_BALANCE']

OPENING_BALANCE = 1000000

SCHEMA = """
CREATE TABLE chaos_account (
    id integer PRIMARY KEY,
    balance bigint NOT NULL,
    opening bigint NOT NULL
);
CREATE TABLE chaos_transfer (
    id serial PRIMARY KEY,
    uid text NOT NULL,
    src integer NOT NULL REFERENCES chaos_account,
    dst integer NOT NULL REFERENCES chaos_account,
    amount integer NOT NULL CHECK (amount > 0),
    CHECK (src <> dst)
);
CREATE INDEX chaos_transfer_uid ON chaos_transfer (uid);
"""


class Account(SQLBase):
    """An account whose balance the transfers move."""

    class sqlmeta:
        table = 'chaos_account'
        registry = 'chaos'

    balance = IntCol(notNull=True)
    opening = IntCol(notNull=True)


class Transfer(SQLBase):
    """One unit of work, identified by its client-side uid."""

    class sqlmeta:
        table = 'chaos_transfer'
        registry = 'chaos'

    uid = StringCol(notNull=True)
    src = IntCol(notNull=True)
    dst = IntCol(notNull=True)
    amount = IntCol(notNull=True)
