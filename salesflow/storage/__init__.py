"""The warehouse: forecast tables, idempotent transactional writes, locks."""
