"""Grounding once per relational structure: `structure_key` hashes which facts a batch has (not
their values), and `GroundingCache` keeps the last groundings of an Engine (polyir.nn.grounding)
under that key, so a batch that repeats every epoch is grounded once."""
from __future__ import annotations

import collections
import hashlib

import numpy as np


def structure_key(facts: dict, batch_size: int) -> bytes:
    """A hash of which facts there are (not their values)."""
    h = hashlib.sha256()  # hardware-accelerated on most CPUs: ~0.5 GB/s and more
    h.update(str(batch_size).encode())
    for name in sorted(facts):
        sample, args = facts[name]
        sample = np.ascontiguousarray(sample, np.int64)
        args = np.ascontiguousarray(args, np.int64)
        h.update(name.encode() + b"\0" + str(args.shape).encode())
        for a in (sample, args):
            if a.size:
                h.update(memoryview(a.reshape(-1)).cast("B"))
    return h.digest()


class GroundingCache:
    """The last `size` groundings an Engine made, keyed by `structure_key`; calling it returns
    the Grounding of a batch, from the cache or from `engine.ground`."""

    def __init__(self, engine, size: int = 64):
        self.engine, self.size = engine, size
        self.store: collections.OrderedDict = collections.OrderedDict()
        self.hits = self.misses = 0

    def __call__(self, facts: dict, batch_size: int, key: bytes | None = None,
                 progress: bool | None = None):
        key = key if key is not None else structure_key(facts, batch_size)
        g = self.store.get(key)
        if g is not None:
            self.hits += 1
            self.store.move_to_end(key)
            return g
        self.misses += 1
        g = self.engine.ground(facts, batch_size, progress)
        self.store[key] = g
        if len(self.store) > self.size:
            self.store.popitem(last=False)
        return g


__all__ = ["structure_key", "GroundingCache"]
