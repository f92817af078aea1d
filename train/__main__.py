"""``python -m poet.train`` (and ``torchrun -m poet.train``) run ``poet-train``."""

import sys

from poet.train.cli import main

sys.exit(main())
