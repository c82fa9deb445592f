"""``python -m transmem`` (also what ``torchrun ... -m transmem train ...`` runs)."""

import sys

from transmem.cli import main

sys.exit(main())
