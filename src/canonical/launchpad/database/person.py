"""The Person model: people and teams."""

from sqlobject import ForeignKey
from sqlobject import IntCol
from sqlobject import StringCol
from sqlobject import DateTimeCol
from sqlobject.sqlbuilder import SQLConstant

from canonical.database.sqlbase import SQLBase

__all__ = ['Person']

# Let the database fill a column with its own DEFAULT expression.
DB_DEFAULT = SQLConstant('DEFAULT')


class Person(SQLBase):
    """A person, or a team when teamowner is set."""

    class sqlmeta:
        table = 'person'
        defaultOrder = 'id'

    name = StringCol(notNull=True, alternateID=True, alternateMethodName='byName')
    displayname = StringCol(default=None)
    givenname = StringCol(default=None)
    familyname = StringCol(default=None)
    password = StringCol(default=None)
    teamowner = ForeignKey(dbName='teamowner', foreignKey='Person', default=None)
    karma = IntCol(notNull=True, default=0)
    datecreated = DateTimeCol(default=DB_DEFAULT)
