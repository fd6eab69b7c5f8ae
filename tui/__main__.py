"""``python -m tui`` is the ``descent`` command."""

import sys

from tui.cli import main

sys.exit(main())
