"""leadctl: send a message to every marketing lead in a file, without losing or double-sending one.

The folders follow a lead's life: ingest -> queue -> send -> providers, with store (PostgreSQL, the
system of record) beneath them; ops, compliance and webhooks beside; commands (the CLI) on top; local
(embedded servers, demo, sandbox) and bench apart from the product. README.md "How it works" draws it.
"""

__version__ = "0.1.0"
