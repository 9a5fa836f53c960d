"""One exception hierarchy; each error knows the exit code the CLI turns it into (leadctl.cli)::

LeadctlError                 exit 1: the job ran but some leads failed or were rejected
├── UsageError               exit 2: bad input, option or configuration
│   ├── ConfigError              the configuration file or an environment override is invalid
│   └── InputError               an input file is missing, unreadable or unusable as a whole
└── DependencyError          exit 3: Redis, PostgreSQL or a provider's authentication is unreachable
"""

from __future__ import annotations


class LeadctlError(Exception):
    """Base of every error leadctl reports as one line on stderr."""

    exit_code = 1


class UsageError(LeadctlError):
    """Bad input file, bad option or bad configuration (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration file or an environment override is invalid (exit 2)."""


class InputError(UsageError):
    """An input file is missing, unreadable or unusable as a whole (exit 2)."""


class DependencyError(LeadctlError):
    """Redis, PostgreSQL or a provider's authentication is unreachable (exit 3)."""

    exit_code = 3
