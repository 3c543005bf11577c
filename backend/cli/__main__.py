"""``python -m backend.cli`` is the ``portfolio`` console script."""

import sys

from backend.cli import main

sys.exit(main())
