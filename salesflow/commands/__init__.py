"""The ``salesflow`` command line: commands, errors, status, preflight checks."""
