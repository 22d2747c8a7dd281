"""Seeds derived from the master ``config['seed']``: one place, so every stage's random
stream is stable across Python runs (no ``hash``), independent of row order and distinct
per purpose.

* :func:`named_seed` -- one integer seed per named thing (a model, a stage's job);
  :func:`model_seed` -- the seed of one replicate of a variant's model.
* :func:`id_seed` -- seed words for one image's generator, from its VOC id, so an image gets
  the same random numbers however a split is ordered, subset or batched.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np


def named_seed(config: Mapping[str, Any], name: str) -> int:
    """The seed of ``name`` (e.g. a model ``black`` or ``attribute/black/gradient``): derived
    from ``config['seed']`` and the name, so variants get distinct initialisations and
    shuffles while the whole grid follows one master seed."""
    digest = hashlib.blake2b(f"{config['seed']}/{name}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def model_seed(config: Mapping[str, Any], variant: str, replicate: int) -> int:
    """The initialisation and shuffling seed of replicate ``replicate`` of ``variant``'s model
    (replicates are independently seeded models of the same variant)."""
    return named_seed(config, f"{variant}/replicate{replicate}")


def id_seed(seed: int, stream: int, image_id: str) -> list[int]:
    """Seed words for one image's generator: (seed, purpose ``stream``, 4 words of
    sha256(id)); pass them to ``np.random.default_rng``."""
    digest = hashlib.sha256(image_id.encode()).digest()
    return [seed, stream, *np.frombuffer(digest[:16], dtype="<u4").tolist()]
