# Test modules of the whole project; zope.testrunner finds test_*.py here.
