"""python -m worker: the flashcall command."""

import sys

from worker.cli import main

sys.exit(main())
