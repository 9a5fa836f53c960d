"""The CLI's commands, one module per group; each registers itself on ``leadctl.commands.app.app``."""
