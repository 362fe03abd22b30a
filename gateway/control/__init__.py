"""Experiments and assignment: the frozen experiment model (`model`), its one validation
point from settings (`config`), and the pure bucketing functions (`assignment`)."""
