"""Data in: sources, the canonical frame, the synthetic generator, validation (GX)."""
