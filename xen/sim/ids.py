"""Where the simulator's uuids and OpaqueRefs come from: random, or a seeded stream.

With a lab seed (`[server] seed`, `xo-migrate sim --seed N`) every pool draws its ids from its
own pseudo-random stream, seeded with the lab seed and the pool's name: building the same lab
twice gives the same uuids and refs, and one pool's objects do not shift another's. Ids made
later (tasks, VDI copies, imported VMs) come from the same stream, so they repeat only when the
same calls arrive in the same order. Without a seed, ids are random (uuid4), as XAPI's are.

Session refs never come from here: they are credentials (sessions.py keeps them random).
"""

from __future__ import annotations

import random
import uuid


class IdSource:
    def __init__(self, seed: int | None = None, stream: str = "") -> None:
        self.seed = seed
        self._rng = random.Random(f"{seed}/{stream}") if seed is not None else None

    @property
    def seeded(self) -> bool:
        return self._rng is not None

    def uuid(self) -> str:
        if self._rng is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def ref(self) -> str:
        return f"OpaqueRef:{self.uuid()}"
