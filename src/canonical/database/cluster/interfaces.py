"""The exceptions of canonical.database.cluster.

They derive from Exception only, not from ZopelessError, so that the
cluster code keeps to the standard library and runs before the project's
dependencies are installed.
"""

__all__ = ['ClusterError', 'BinariesNotFound', 'ExternalServerError']


class ClusterError(Exception):
    """The private PostgreSQL cluster could not be found, built or run."""


class BinariesNotFound(ClusterError):
    """No PostgreSQL server binaries were found on this machine."""


class ExternalServerError(ClusterError):
    """The operation needs the private cluster, but PG* names another server."""
