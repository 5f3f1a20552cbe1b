"""The Launchpad sample application: models and test fixtures."""
