"""Settings: the typed sections, their layering from YAML and the environment, checks."""
