"""leadctl: send a message to every marketing lead in a file, without losing or double-sending one."""

__version__ = "0.1.0"
