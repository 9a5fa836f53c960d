"""The CLI's commands, one module per group; each registers itself on ``leadctl.commands.app.app``.

A command parses its options, calls one library entry point and renders what it returns. leadctl.cli
loads only the module of the subcommand it runs (COMMAND_MODULES), so each command loads only the
library it uses; `leadctl --help` loads them all.
"""
