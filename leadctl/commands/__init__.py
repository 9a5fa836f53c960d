"""The CLI's commands, one module per group; each registers itself on ``leadctl.commands.app.app``.

A command parses its options, calls one library entry point and renders what it returns. It imports
that library module when it runs, so `leadctl --help` and each command load only what they use
(every library module at once would double the start-up time of every command).
"""
