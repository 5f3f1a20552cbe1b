"""``python -m canonical.database.cluster``: the old name of
``python -m canonical.testing.cluster``, kept working with a warning."""

import sys

print('python -m canonical.database.cluster is deprecated: use '
      'python -m canonical.testing.cluster', file=sys.stderr)
# A compat shim, the one module of canonical.database importing the test
# kit at its top (scripts/layering.py allows it, and only it, that).
from canonical.testing.cluster.cli import main  # noqa: E402

sys.exit(main())
