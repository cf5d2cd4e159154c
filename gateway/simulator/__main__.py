"""`python -m gateway.simulator`: run the 8x8 simulator (see gateway/simulator/server.py)."""

import sys

from gateway.simulator.server import main

sys.exit(main())
