"""Normalise contact values: phones to E.164 (phonenumbers), emails (email-validator), channel names.

What lead files repeat is cached (email domains, channel names, per-country metadata); whole phones
and emails are not: they are nearly all distinct, and a cache miss costs more than the rare hit
saves. Values that are already in their canonical shape take a fast path that still validates them
against the library's metadata, and fall back to the full parser on anything unusual; tests check
both paths agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache
from typing import NamedTuple

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from phonenumbers import (
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberDesc,
    PhoneNumberType,
    ValidationResult,
)

from leadctl.ingest.columns import column_key

phonenumbers.enable_pattern_cache()  # compile each metadata pattern once, not on every match

_FORMATTING = str.maketrans("", "", " ()-./'\t\u00a0")
_COUNTRY_CODES = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
_BR = 55
_REPAIRABLE = frozenset("6789")
_POSSIBLE_REASON = {
    ValidationResult.TOO_SHORT: "is too short",
    ValidationResult.TOO_LONG: "is too long",
    ValidationResult.INVALID_LENGTH: "has the wrong number of digits",
    ValidationResult.INVALID_COUNTRY_CODE: "has an unknown country code",
}
_PARSE_REASON = {
    NumberParseException.INVALID_COUNTRY_CODE: "has an unknown country code",
    NumberParseException.NOT_A_NUMBER: "is not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "is too short",
    NumberParseException.TOO_SHORT_NSN: "is too short",
    NumberParseException.TOO_LONG: "is too long",
}
# RFC 5322 dot-atom in ASCII: a local part email-validator accepts unchanged.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_CASE_INSENSITIVE_LOCAL = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_CHANNEL_ALIASES = {
    "sms": ("sms", "texto", "text", "torpedo"),
    "whatsapp": ("whatsapp", "whats", "wpp", "zap", "zapzap", "wa", "wapp"),
    "email": ("email", "mail", "correio", "correioeletronico"),
}
_CHANNELS = {alias: channel for channel, aliases in _CHANNEL_ALIASES.items() for alias in aliases}


class Phone(NamedTuple):
    """A valid phone: E.164, whether it is a landline, whether a Brazilian 9th digit was added."""

    e164: str
    landline: bool = False
    repaired: bool = False


_phone = tuple.__new__
"""Phone(e164, landline, repaired) without NamedTuple's keyword handling (the hot path)."""


class Invalid(NamedTuple):
    """Why a value was not accepted, in words a user can act on."""

    message: str


def normalise_phone(value: str, region: str) -> Phone | Invalid:
    """A phone as typed ('(11) 98765-4321', '+55 11 98765 4321') -> Phone, or Invalid saying why."""
    if value[:1] == "+" and value[1:].isdigit() and value.isascii():  # E.164 already, mostly
        split = _international(value[1:])
    else:
        digits = value.translate(_FORMATTING)
        split = None
        if digits[:1] == "+" and digits[1:].isdigit() and digits.isascii():
            split = _international(digits[1:])
        elif digits.isdigit() and digits.isascii():
            split = _national(digits, region)
    result = _classify(*split) if split is not None else None
    return result if result is not None else _parse(value, region)


def _code_and_size(digits: str) -> tuple[int, int] | None:
    """The country code a run of digits starts with and its length (1 to 3 digits), or None."""
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in _COUNTRY_CODES:
            return code, size
    return None


_CODE_BY_PREFIX = {f"{p:03d}": _code_and_size(f"{p:03d}") for p in range(1000)}
"""Each 3-digit start of an international number -> its country code and the code's length."""


def _international(digits: str) -> tuple[int, str] | None:
    """'5511987654321' (after the +) -> (55, '11987654321'); None when unusual (the parser decides)."""
    if digits[0] == "0":
        return None
    found = _CODE_BY_PREFIX.get(digits[:3]) if len(digits) >= 3 else _code_and_size(digits)
    if found is None:
        return None
    code, size = found
    national = digits[size:]
    if national[:1] in ("", "0") or len(national) > 17:
        return None
    return code, national


class _Region(NamedTuple):
    """What the fast path needs of a region's metadata."""

    code: int
    national_prefix: re.Pattern[str]
    international_prefix: re.Pattern[str]
    general: re.Pattern[str]
    lengths: frozenset[int]


def _national(digits: str, region: str) -> tuple[int, str] | None:
    """National digits, perhaps after a trunk prefix ('011 98765 4321') -> (the region's country
    code, the national significant number); None when unusual (the parser decides)."""
    known = _region(region)
    if known is None or len(digits) > 17:
        return None
    prefix = known.national_prefix.match(digits)
    if prefix is not None:
        if digits[0] != "0":
            return None
        national = _without_trunk_prefix(digits, prefix, known)
        if national is None:
            return None
        digits = national
    if digits[:1] in ("", "0"):
        return None
    return known.code, digits


def _without_trunk_prefix(digits: str, prefix: re.Match[str], known: _Region) -> str | None:
    """What phonenumbers keeps of ``digits`` (which start with 0 and the region's national prefix)
    in the common case: the prefix stripped, when that leaves a number of a possible length and
    the digits were neither an international call nor viable as they are (phonenumbers then keeps
    them whole); else None."""
    groups = prefix.re.groups
    if groups and prefix.group(groups) is not None:  # a carrier code, rewritten: the parser decides
        return None
    rest = digits[prefix.end() :]
    if known.international_prefix.match(digits) or known.general.fullmatch(digits):
        return None
    return rest if len(rest) in known.lengths else None


@cache
def _region(region: str) -> _Region | None:
    """The region's metadata the fast path needs; None without metadata."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.general_desc is None:
        return None
    general = metadata.general_desc
    local = set(general.possible_length_local_only or ())
    return _Region(
        metadata.country_code,
        re.compile(metadata.national_prefix_for_parsing or r"(?!)"),
        re.compile(metadata.international_prefix or r"(?!)"),
        re.compile(general.national_number_pattern or r"(?!)"),
        frozenset(length for length in general.possible_length if length not in local),
    )


def _classify(code: int, national: str, number: PhoneNumber | None = None) -> Phone | None:
    """Country code + national significant number (+ the parsed number, if any) -> Phone when valid
    (repairing old 8-digit BR mobiles), else None."""
    if code == _BR and len(national) == 10 and national[2] in _REPAIRABLE:
        candidate = f"{national[:2]}9{national[2:]}"
        if _number_type(code, candidate) == PhoneNumberType.MOBILE:
            return _phone(Phone, (f"+{code}{candidate}", False, True))
    kind = _number_type(code, national, number)
    if kind == PhoneNumberType.UNKNOWN:
        return None
    return _phone(Phone, (f"+{code}{national}", kind == PhoneNumberType.FIXED_LINE, False))


def _number_type(code: int, national: str, number: PhoneNumber | None = None) -> int:
    """phonenumbers.number_type, without building a PhoneNumber when the code has one region (+55):
    the same metadata and the same steps as phonenumbers' _number_type_helper, with each pattern
    compiled once, at a fifth of the cost."""
    classify = _classifier(code)
    if classify is not None:
        return classify(national)
    if number is None:
        number = PhoneNumber(country_code=code, national_number=int(national))
    return phonenumbers.number_type(number)


_SPECIAL_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)


def _applies(desc: PhoneNumberDesc | None, length: int) -> str | None:
    """A desc's pattern when phonenumbers' _is_number_matching_desc would try it on a number of
    ``length`` digits (it has a pattern, and ``length`` is one of its possible lengths, if any)."""
    if desc is None or not desc.national_number_pattern:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    return f"(?:{desc.national_number_pattern})"


def _type_pattern(metadata: PhoneMetadata, length: int) -> tuple[re.Pattern[str], dict[str, int]] | None:
    """One regex deciding the number type of a ``length``-digit national number, as phonenumbers'
    _number_type_helper does desc by desc: the general desc must match, then the first alternative
    that matches names the type (the special types, fixed line and mobile, in the helper's order);
    None when no number of that length has a type."""
    general = _applies(metadata.general_desc, length)
    if general is None:
        return None
    alternatives: list[tuple[str, int]] = []
    for name, kind in _SPECIAL_TYPES:
        pattern = _applies(getattr(metadata, name), length)
        if pattern is not None:
            alternatives.append((pattern, kind))
    fixed, mobile = _applies(metadata.fixed_line, length), _applies(metadata.mobile, length)
    same = metadata.same_mobile_and_fixed_line_pattern
    if fixed is not None:
        if same:
            alternatives.append((fixed, PhoneNumberType.FIXED_LINE_OR_MOBILE))
        elif mobile is not None:
            alternatives.append((rf"(?={mobile}\Z){fixed}", PhoneNumberType.FIXED_LINE_OR_MOBILE))
    if fixed is not None and not same:
        alternatives.append((fixed, PhoneNumberType.FIXED_LINE))
    if mobile is not None and not same:
        alternatives.append((mobile, PhoneNumberType.MOBILE))
    if not alternatives:
        return None
    body = "|".join(f"(?P<t{i}>{pattern})" for i, (pattern, _) in enumerate(alternatives))
    kinds = {f"t{i}": kind for i, (_, kind) in enumerate(alternatives)}
    return re.compile(rf"(?={general}\Z)(?:{body})"), kinds


@cache
def _classifier(code: int) -> Callable[[str], int] | None:
    """The number type of a national number of a single-region country code, as phonenumbers'
    _number_type_helper decides it, in one regex match; None for shared codes (+1, +7...)."""
    metadata = _single_region_metadata(code)
    if metadata is None:
        return None
    by_length: dict[int, tuple[re.Pattern[str], dict[str, int]] | None] = {}

    def classify(national: str) -> int:
        length = len(national)
        try:
            decider = by_length[length]
        except KeyError:
            decider = by_length[length] = _type_pattern(metadata, length)
        if decider is None:
            return PhoneNumberType.UNKNOWN
        pattern, kinds = decider
        match = pattern.fullmatch(national)
        return PhoneNumberType.UNKNOWN if match is None else kinds[match.lastgroup]  # type: ignore[index]

    return classify


@cache
def _single_region_metadata(code: int) -> PhoneMetadata | None:
    regions = _COUNTRY_CODES.get(code, ())
    if len(regions) != 1:
        return None
    return PhoneMetadata.metadata_for_region_or_calling_code(code, regions[0])


def _parse(value: str, region: str) -> Phone | Invalid:
    """The full phonenumbers parser, with a reason when the number is not valid."""
    try:
        number = phonenumbers.parse(value, region)
    except NumberParseException as exc:
        return Invalid(f"phone {_PARSE_REASON.get(exc.error_type, 'is not a phone number')}")
    result = _classify(number.country_code, phonenumbers.national_significant_number(number), number)
    if result is not None:
        return result
    where = phonenumbers.region_code_for_country_code(number.country_code)
    reason = _POSSIBLE_REASON.get(phonenumbers.is_possible_number_with_reason(number))
    if reason is None:
        return Invalid(f"phone is not a valid {where} number (no such area code or range)")
    return Invalid(f"phone {reason} for {where} (+{number.country_code})")


def normalise_email(value: str) -> str | Invalid:
    """An email as typed -> email-validator's normalized form (no DNS lookups), or Invalid."""
    local, at, domain = value.rpartition("@")
    if at and len(value) <= 254 and domain.isascii() and _PLAIN_LOCAL.fullmatch(local) and len(local) <= 64:
        normal_domain = _email_domain(domain)
        if normal_domain is not None and local.lower() not in _CASE_INSENSITIVE_LOCAL:
            return f"{local}@{normal_domain}"
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return Invalid(str(exc))


@lru_cache(maxsize=1 << 12)
def _email_domain(domain: str) -> str | None:
    """A domain's normalized ASCII form as email-validator gives it, or None (then the full path runs)."""
    try:
        normal = validate_email(f"x@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None
    return normal if normal.isascii() else None


@lru_cache(maxsize=256)
def normalise_channel(value: str) -> str | None:
    """'WhatsApp', 'zap', 'E-mail', 'SMS' -> whatsapp | email | sms; None when unknown."""
    return _CHANNELS.get(column_key(value))


def normalise_contact(value: str, region: str) -> str | Invalid:
    """A phone or an email as typed (an email has an @) -> the contact ingest would store for it."""
    value = value.strip()
    if "@" in value:
        return normalise_email(value)
    result = normalise_phone(value, region)
    return result if isinstance(result, Invalid) else result.e164
