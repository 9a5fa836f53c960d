"""Each provider's proof that a webhook came from it, checked before anything is read.

- Twilio: ``X-Twilio-Signature`` = base64 HMAC-SHA1, keyed with the account's auth token, of the
  full URL Twilio called followed by every POST parameter, sorted, as name + value.
- Meta (WhatsApp Cloud): ``X-Hub-Signature-256`` = ``sha256=`` + hex HMAC-SHA256 of the raw body,
  keyed with the app secret.
- SendGrid (signed Event Webhook): ``X-Twilio-Email-Event-Webhook-Signature`` = base64 DER ECDSA
  (P-256, SHA-256) signature of ``X-Twilio-Email-Event-Webhook-Timestamp`` + raw body, verified
  with the verification key SendGrid shows (base64 DER, or PEM).
- Zenvia signs nothing; its subscriptions send the headers you configure, so the subscription
  carries a secret token in ``X-Webhook-Token`` (``providers.<name>.webhook_header`` to rename it).

Every comparison is constant-time; a secret that is not configured verifies nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

TWILIO_HEADER = "X-Twilio-Signature"
META_HEADER = "X-Hub-Signature-256"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
ZENVIA_HEADER = "X-Webhook-Token"


def _same(expected: str, presented: str) -> bool:
    """Constant-time equality of two header values (bytes: a header may hold any byte, which the
    HTTP server hands over as a surrogate escape)."""
    return hmac.compare_digest(_raw(expected), _raw(presented))


def _raw(header: str) -> bytes:
    return header.encode("utf-8", "surrogateescape")


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """What Twilio puts in X-Twilio-Signature for a POST of ``params`` to ``url``."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_valid(tokens: Iterable[str], url: str, params: list[tuple[str, str]], signature: str) -> bool:
    return bool(signature) and any(_same(twilio_signature(token, url, params), signature) for token in tokens)


def meta_signature(app_secret: str, body: bytes) -> str:
    """What Meta puts in X-Hub-Signature-256 for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def meta_valid(secrets: Iterable[str], body: bytes, signature: str) -> bool:
    return bool(signature) and any(_same(meta_signature(secret, body), signature) for secret in secrets)


def sendgrid_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key as shown in its settings (base64 DER) or as PEM; ValueError otherwise."""
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"not an ECDSA public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an ECDSA public key")
    return key


def sendgrid_valid(
    keys: Iterable[ec.EllipticCurvePublicKey], body: bytes, signature: str, timestamp: str
) -> bool:
    if not signature or not timestamp:
        return False
    try:
        der = base64.b64decode(_raw(signature), validate=True)
    except binascii.Error:
        return False
    signed = _raw(timestamp) + body
    for key in keys:
        try:
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            continue
    return False


def token_valid(tokens: Iterable[str], presented: str) -> bool:
    return bool(presented) and any(_same(token, presented) for token in tokens)
