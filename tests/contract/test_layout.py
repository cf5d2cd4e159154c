"""The store package's modules import in one direction: what RedisStore and the Cluster
split share (lua/decide.lua's wire format) lives in gateway/store/codec.py."""

from __future__ import annotations

import subprocess
import sys


def test_the_cluster_split_does_not_import_the_redis_store() -> None:
    code = ("import sys, gateway.store.cluster; "
            "print('gateway.store.redis' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
