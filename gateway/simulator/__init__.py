"""The 8x8 API simulator: an 8x8 stand-in for the demo, the tests and the benchmarks.

`gateway.simulator.server` wires the parts and is what `python -m gateway.simulator` runs.
"""
