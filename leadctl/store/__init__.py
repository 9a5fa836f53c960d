"""PostgreSQL, the system of record: every accepted lead and every delivery outcome."""
