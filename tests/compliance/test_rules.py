"""The rules on their own: send windows and time zones, opt-out keywords, cap syntax, signatures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from leadctl.compliance.optout import OptOutKeywords
from leadctl.compliance.windows import Window, next_allowed, zones_for
from leadctl.config import DEFAULT_OPTOUT_KEYWORDS, Cap, Settings, parse_cap, parse_days, zone
from leadctl.errors import ConfigError
from leadctl.webhooks import signatures

SAO_PAULO = zone("America/Sao_Paulo")
BRAZIL = Window.parse("09:00-20:00", "mon-sat")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_days_and_windows() -> None:
    assert parse_days("mon-sat") == frozenset(range(6))
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days("all") == frozenset(range(7))
    for bad in ("weekdays", "mon-xyz", ""):
        with pytest.raises(ValueError):
            parse_days(bad)
    for bad in ("9-20", "20:00-09:00", "09:00-25:00"):
        with pytest.raises(ValueError):
            Window.parse(bad, "all")


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        ("2024-06-03T12:00:00", None),  # Monday 09:00 in São Paulo: open
        ("2024-06-03T11:59:00", "2024-06-03T12:00:00"),  # 08:59: opens at 09:00
        ("2024-06-03T23:00:00", "2024-06-04T12:00:00"),  # 20:00 is already closed
        ("2024-06-08T22:59:00", None),  # Saturday 19:59
        ("2024-06-08T23:00:00", "2024-06-10T12:00:00"),  # Saturday 20:00: Monday 09:00
        ("2024-06-09T15:00:00", "2024-06-10T12:00:00"),  # Sunday noon
    ],
)
def test_next_allowed_in_sao_paulo(now: str, opens: str | None) -> None:
    assert SAO_PAULO is not None
    expected = _utc(opens) if opens else None
    assert next_allowed(_utc(now), BRAZIL, [SAO_PAULO], SAO_PAULO) == expected


def test_zones_from_field_phone_and_default() -> None:
    assert SAO_PAULO is not None
    names = lambda zones: [z.key for z in zones]  # noqa: E731
    assert names(zones_for("+5511987654321", {}, "timezone", SAO_PAULO)) == ["America/Sao_Paulo"]
    assert names(zones_for("+5511987654321", {"timezone": "America/Manaus"}, "timezone", SAO_PAULO)) == [
        "America/Manaus"
    ]
    assert names(zones_for("+5511987654321", {"timezone": "Mars/Base"}, "timezone", SAO_PAULO)) == [
        "America/Sao_Paulo"
    ]
    # Acre keeps UTC-5; Brasília time joins every Brazilian number's candidates
    assert names(zones_for("+5568999999999", {}, "timezone", SAO_PAULO)) == [
        "America/Rio_Branco",
        "America/Sao_Paulo",
    ]
    assert names(zones_for("+12125551234", {}, "timezone", SAO_PAULO)) == ["America/New_York"]
    assert names(zones_for("ana@example.com", {}, "timezone", SAO_PAULO)) == ["America/Sao_Paulo"]


def test_several_zones_allow_only_their_common_hours() -> None:
    assert SAO_PAULO is not None
    acre = zones_for("+5568999999999", {}, "timezone", SAO_PAULO)
    # Monday 09:30 in São Paulo is 07:30 in Rio Branco: wait for 09:00 there (14:00 UTC)
    assert next_allowed(_utc("2024-06-03T12:30:00"), BRAZIL, acre, SAO_PAULO) == _utc("2024-06-03T14:00:00")
    # 19:30 in São Paulo (17:30 in Rio Branco) is still inside both
    assert next_allowed(_utc("2024-06-03T22:30:00"), BRAZIL, acre, SAO_PAULO) is None
    # a toll-free number listed in every North American zone: no common hour, the default decides
    everywhere = zones_for("+18005551234", {}, "timezone", SAO_PAULO)
    assert len(everywhere) > 10
    assert next_allowed(_utc("2024-06-03T12:30:00"), BRAZIL, everywhere, SAO_PAULO) is None


def test_opt_out_keywords() -> None:
    keywords = OptOutKeywords(DEFAULT_OPTOUT_KEYWORDS)
    for text in (
        "STOP",
        "stop",
        " Pare! ",
        "SAÍR",
        "sáir",
        "Descadastrar.",
        "não quero",
        "CANCELAR",
        "unsubscribe",
    ):
        assert keywords.matches(text), text
    for text in ("", "...", "não pare de mandar", "stop it please", "parei"):
        assert not keywords.matches(text), text
    assert OptOutKeywords(["chega"]).matches("CHEGA!") and not OptOutKeywords(["chega"]).matches("stop")


def test_caps_and_compliance_config() -> None:
    assert parse_cap("3/week") == Cap(3, 7 * 86400)
    assert parse_cap("2/day") == Cap(2, 86400)
    assert parse_cap("10 / 30d") == Cap(10, 30 * 86400)
    for bad in ("0/day", "3/0d", "three/week", "3/fortnight"):
        with pytest.raises(ValueError):
            parse_cap(bad)
    settings = Settings.model_validate(
        {
            "compliance": {
                "quiet_hours": {"sms": {}},
                "caps": {"sms": "3/week"},
                "campaigns": {"bf": {"quiet_hours": {"sms": {"allow": "10:00-18:00", "days": "mon-fri"}}}},
            }
        }
    )
    assert settings.compliance.window_for("sms", "other").allow == "09:00-20:00"  # Brazil by default
    assert settings.compliance.window_for("sms", "bf").days == "mon-fri"
    assert settings.compliance.window_for("email", "bf") is None
    for bad in (
        {"caps": {"sms": "lots"}},
        {"quiet_hours": {"sms": {"allow": "9h-20h"}}},
        {"default_timezone": "X/Y"},
    ):
        with pytest.raises(ValueError):
            Settings.model_validate({"compliance": bad})


def test_bad_config_is_a_one_line_config_error(tmp_path) -> None:
    from leadctl.config import load_settings

    path = tmp_path / "leadctl.yaml"
    path.write_text("compliance:\n  caps:\n    sms: lots\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"compliance\.caps: .*not 'lots'"):
        load_settings(path, environ={})


def test_twilio_signature_matches_the_documented_example() -> None:
    # the example of Twilio's "Validating requests" page
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
    }
    params["To"] = "+18005551212"
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signatures.twilio_signature("12345", url, params.items()) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signatures.twilio_valid(
        ["other", "12345"], url, list(params.items()), "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
    assert not signatures.twilio_valid(["12345"], url, list(params.items()), "")
    assert not signatures.token_valid(["secret"], "sécret")  # any header value, never an exception
