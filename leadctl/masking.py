"""Mask personal data and secrets before they reach a log line or an error message."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_phone(phone: str) -> str:
    """'+5511987654321' -> '+55119****4321': keep the country/area prefix and the last four digits."""
    if len(phone) <= 8:
        return "*" * len(phone)
    return phone[:5] + "*" * (len(phone) - 9) + phone[-4:]


def mask_email(email: str) -> str:
    """'joao@example.com' -> 'j***@example.com'."""
    local, sep, domain = email.partition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_contact(contact: str) -> str:
    """Mask a phone or an email, whichever it is."""
    return mask_email(contact) if "@" in contact else mask_phone(contact)


def mask_url(url: str) -> str:
    """Replace the password of a connection URL with '***'."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
