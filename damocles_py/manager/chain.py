"""A simulated chain for the embedded manager: epochs from a clock, randomness from a hash.

There are no blocks: the epoch is the number of whole block times since genesis, and the
randomness of an epoch is a hash, so tickets and seeds are deterministic and need no network.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


class SimulatedChain:
    def __init__(self, genesis: float, block_time: float, clock: Clock = time.time):
        if block_time <= 0:
            raise ValueError(f"block_time must be positive, got {block_time}")
        self.genesis = genesis
        self.block_time = block_time
        self._clock = clock

    def epoch(self) -> int:
        """The current chain head."""
        return math.floor((self._clock() - self.genesis) / self.block_time)

    def randomness(self, tag: str, epoch: int, entropy: bytes) -> bytes:
        """32 bytes of chain randomness for `tag` (e.g. "ticket", "seed") at `epoch`."""
        return hashlib.sha256(b"|".join([tag.encode(), str(epoch).encode(), bytes(entropy)])).digest()

    def seconds_until(self, epoch: int) -> float:
        """How long until the head reaches `epoch` (0 if it already has)."""
        return max(0.0, self.genesis + epoch * self.block_time - self._clock())
