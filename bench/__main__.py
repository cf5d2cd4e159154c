"""`python -m bench [--scenarios 1,2,...] [--workers 2] [--rounds 3] [--duration 10]
[--out DIR] [--smoke]`: see bench/README.md."""

from __future__ import annotations

import sys
from pathlib import Path

# the bench runs from a clone; tests/support (process helpers) sits beside bench/
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
