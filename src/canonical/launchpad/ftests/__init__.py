"""Functional-test support for the Launchpad sample database."""
