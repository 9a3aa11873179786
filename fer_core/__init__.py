"""fer-study core: FER data, the imbalance toolkit and the trainable."""

from __future__ import annotations

__version__ = "0.1.0"
