"""The 8x8 API simulator's parts; `bench.simulator` is the entry point that wires them."""
