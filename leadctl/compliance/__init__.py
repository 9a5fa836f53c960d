"""Compliance: quiet hours, frequency caps, opt-out keywords, consent, erasure (LGPD) and hashed contacts."""
