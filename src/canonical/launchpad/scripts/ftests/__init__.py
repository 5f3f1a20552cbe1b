"""Helpers for the tests of the script framework: a work script, real
processes to run it in, and work for forked children."""
