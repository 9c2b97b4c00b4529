"""Names for the arrays that pass between functions, saying what they hold."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.floating[Any]]  # probabilities (rows x classes), scores, vectors
Indices = NDArray[np.integer[Any]]  # row positions
