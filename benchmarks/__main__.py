"""Entry point: ``bin/python -m benchmarks [--quick]`` (or ``bin/bench``).

Also runs as a script (``bin/python benchmarks/__main__.py --quick``), for
interpreters whose path lacks the checkout's root.
"""

import os
import sys

if __package__ in (None, ''):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

from benchmarks.run import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
