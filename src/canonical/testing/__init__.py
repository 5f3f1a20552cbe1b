"""Test support shared by the packages of this project."""
