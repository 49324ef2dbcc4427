"""``python -m natv2`` is the ``natv2`` command."""

import sys

from natv2.cli import main

sys.exit(main())
