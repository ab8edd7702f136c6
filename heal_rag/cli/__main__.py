"""Allow ``python -m heal_rag.cli``."""

import sys

from heal_rag.cli import main

sys.exit(main())
