"""Put on PYTHONPATH by `python -m bench.soak --memtrace`: traces the gateway's workers."""

import os
import sys

sys.path.insert(0, os.environ.get("GW_MEMTRACE_ROOT", "."))
from bench import memtrace

memtrace.install()
