"""``python -m episodic_memory.cli`` (the same as the ``episodic-memory`` console script)."""

import sys

from episodic_memory.cli import main

sys.exit(main())
