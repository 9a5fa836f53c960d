"""What test modules share (they never import one another, nor conftest; tests/test_layout.py checks).

cli        the real `leadctl`: run to completion or in the background, its one-line errors
files      lead files, sandbox configs, rejects files, the examples folder
state      what a run left in PostgreSQL and Redis (statuses, queued contacts, sent at most once)
waiting    wait_for / wait_until a real condition, never a guessed sleep
servers    where Redis and PostgreSQL are, free ports, the single-or-cluster Redis target
providers  provider adapters over real HTTP against the sandbox
webhooks   signed provider callbacks and seeded deliveries
"""
