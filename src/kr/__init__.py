"""Knowledge Recycling (KR): synthetic-data training with a membership-inference audit.

Lomurno & Matteucci, "Synthetic Image Learning: Preserving Performance and Preventing
Membership Inference Attacks", Pattern Recognition Letters 2025 (arXiv 2407.15526).
"""

__version__ = "0.1.0"
