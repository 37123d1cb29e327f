"""Data in: sources and their partitions, the canonical frame, the synthetic generator,
validation (GX) and its verdict merged over shards."""
