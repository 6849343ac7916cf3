"""The handcrafted embedder builds and runs without importing timm or torchvision.

timm (with torchvision) costs about 1.5 s of start-up in every embedding process and
actor; only network embedders need it. Checked in a fresh interpreter, where no other
test has imported it.
"""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
import numpy as np
from embedders.registry import create, get_card

embedder = create("handcrafted")
features = embedder.embed(np.full((2, 224, 224, 3), 200, np.uint8))
assert features.shape[0] == 2, features.shape
get_card("virchow2")  # registering foundation-model cards imports no timm either
print(sorted(m for m in ("timm", "torchvision") if m in sys.modules))
"""


def test_handcrafted_embedding_loads_no_timm():
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
