"""``python -m cluster run|submit|status|logs|cancel``: how a submitted job starts."""

from __future__ import annotations

import sys

from cluster.cli import main

sys.exit(main())
