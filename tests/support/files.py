"""Files a test hands to leadctl and reads back: lead files, configs, rejects files."""

from __future__ import annotations

import csv
from pathlib import Path

from leadctl.local.sandbox.server import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
"""The repository's examples/ folder (lead files, Prometheus rules, the Grafana dashboard)."""

STATS_SMS = "    max_attempts: 2\n    retry_initial_ms: 1\n    retry_max_ms: 5\n"
"""Channel keys of the `leadctl stats` tests: 2 attempts with a tiny backoff."""

STATS_TWILIO = "    read_timeout_ms: 300\n    price: {sms: 0.01}\n"
"""Provider keys of the `leadctl stats` tests: a 300 ms read timeout, 0.01 USD a message."""


def write_leads(path: Path, count: int, start: int = 0, extra_phones: tuple[str, ...] = ()) -> list[str]:
    """A CSV of ``count`` Brazilian mobiles from number ``start`` on, written in mixed formats, each with
    an email and channel SMS; then one row per phone of ``extra_phones``. Returns the E.164 phones."""
    phones, lines = [], ["nome,telefone,email,canal"]
    for i in range(start, start + count):
        local = f"9{8000_0000 + i:08d}"
        phones.append(f"+5511{local}")
        written = f"(11) {local[:5]}-{local[5:]}" if i % 2 else f"+55 11 {local}"
        lines.append(f"Lead {i},{written},lead{i}@example.com,SMS")
    for i, phone in enumerate(extra_phones, start + count):
        phones.append(phone)
        lines.append(f"Lead {i},{phone},,SMS")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return phones


def sandbox_config(path: Path, base_url: str, extra: str = "", *, sms: str = "", twilio: str = "") -> Path:
    """A config sending sms through the sandbox's Twilio at ``base_url``. ``sms`` and ``twilio`` are
    more YAML lines of the channel and the provider (indented 4); ``extra`` is appended last (under
    the provider when indented 4, else top-level keys)."""
    path.write_text(
        f"channels:\n  sms:\n    provider: twilio\n    template: 'Oi {{{{ name }}}}!'\n{sms}"
        f"providers:\n  twilio:\n    base_url: {base_url}\n    account_sid: {SANDBOX_ACCOUNT_SID}\n"
        f"    auth_token: {SANDBOX_AUTH_TOKEN}\n    from: '+15005550006'\n{twilio}{extra}",
        encoding="utf-8",
    )
    return path


def stats_config(path: Path, base_url: str, extra: str = "") -> Path:
    """The sandbox config of the `leadctl stats` tests (STATS_SMS, STATS_TWILIO), then ``extra``."""
    return sandbox_config(path, base_url, extra, sms=STATS_SMS, twilio=STATS_TWILIO)


def read_rejects(path: Path) -> list[list[str]]:
    """The rows of a rejects file, its header first."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.reader(file))
