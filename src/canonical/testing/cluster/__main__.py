"""Entry point of ``python -m canonical.testing.cluster``."""

import sys

# main lives in cli.py: were it defined here, the package's import of it
# would load this module a second time and runpy would warn on stderr.
from canonical.testing.cluster.cli import main

sys.exit(main())
