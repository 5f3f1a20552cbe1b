"""The Launchpad models, as the original scripts import them."""

from canonical.launchpad.database.person import Person

__all__ = ['Person']
