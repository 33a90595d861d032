"""Where heavy stages run: in the daemon, or in long-lived child processes (`[[processors.<stage>]]`).

A sealing thread runs a stage's task through one call (`Processors.run`); whether that call is a
plain function call or a round trip to a child pinned to some cores is configuration, not code.
- `protocol`: the typed frames parent and child exchange (pickled dataclasses on stdin/stdout).
- `tasks`: the functions a child may run, by name (the proofs stages and the persist copy).
- `child`: the `damocles-worker processor <stage>` main loop (pinning, NUMA policy, logs home).
- `pool`: the parent side: start, pick (free capacity first), lock, restart.
- `gates`: `[processors.limitation]` concurrent and staggered, and `[processors.ext_locks]`.
"""
