"""Dry run: every message "succeeds" without leaving the process."""

from __future__ import annotations

import logging

import aiohttp

from leadctl.config import ProviderSettings
from leadctl.masking import mask_contact
from leadctl.providers.base import Message, SendResult

log = logging.getLogger(__name__)


class LogProvider:
    """Accepts every message and answers ``log-<lead_id>``; logs it (masked) at debug level."""

    def __init__(self, name: str, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        self.name = name

    async def send(self, message: Message) -> SendResult:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dry run: %s message to %s", message.channel, mask_contact(message.to))
        return SendResult(f"log-{message.lead_id}")
