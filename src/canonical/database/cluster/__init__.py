"""Deprecated: the private cluster is ``canonical.testing.cluster``.

``python -m canonical.database.cluster`` still works, with a warning on
stderr; import from ``canonical.testing.cluster`` instead.
"""
