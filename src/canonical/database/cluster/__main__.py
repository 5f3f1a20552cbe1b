"""``python -m canonical.database.cluster``: the old name of
``python -m canonical.testing.cluster``, kept working with a warning."""

import importlib
import sys

print('python -m canonical.database.cluster is deprecated: use '
      'python -m canonical.testing.cluster', file=sys.stderr)
# Imported by name at run time: the library package imports nothing of
# the test kit.
sys.exit(importlib.import_module('canonical.testing.cluster.cli').main())
