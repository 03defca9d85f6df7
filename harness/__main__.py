"""``python -m harness``: the CLI, for launchers that start modules (``accelerate launch -m harness run ...``)."""

import sys

from harness.cli import main

sys.exit(main())
