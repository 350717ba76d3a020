"""One root seed; every other seed is derived from it with a stable hash.

Python's hash() of a string changes between processes, so derivation goes through SHA-256
of a canonical JSON encoding of the keys.  Per-epoch seeds make a resumed run identical to
an uninterrupted one (EDM2 reseeds from (seed, step) for the same reason).
"""

from __future__ import annotations

import hashlib
import json

import torch


def derive_seed(root: int, *keys: object) -> int:
    """A 63-bit seed determined by the root seed and any JSON-encodable keys."""
    payload = json.dumps([int(root), *keys], sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded explicitly; pass it to every random call instead of the global RNG."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
