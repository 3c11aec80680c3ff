"""One seeding helper for the whole book (introduced in Lecture 1).

Every chapter and test that draws random numbers calls :func:`seed_everything`
once and uses the generator it returns, so two builds print the same numbers.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

from . import _validate as check


def seed_everything(seed: int = 0) -> np.random.Generator:
    """Seed Python, NumPy and (if it is imported) PyTorch; return a NumPy generator.

    PyTorch is seeded only when the caller has already imported it, so that a
    chapter without neural networks does not pay for importing it.

    ``seed``: an integer in ``0 .. 2**32 - 1`` (NumPy's range; NumPy integers
    are fine, bools and floats are not).
    """
    seed = check.as_int("seed", seed, 0, 2**32 - 1)
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses the chapter may start
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)
