"""Configuration: file search order, ${ENV} interpolation, LEADCTL_* overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadctl.config import load_settings
from leadctl.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.namespace == "leadctl"
    assert settings.redis.url is None and settings.database.url is None
    assert settings.worker.batch_size == 1000 and settings.database.pool_size == 50  # the design's
    assert settings.database.connect_timeout_ms == 5000
    assert set(settings.channels) == {"sms", "whatsapp", "email"}


def test_search_order_explicit_then_env_then_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "leadctl.yaml", "namespace: local\n")
    from_env = write(tmp_path / "env.yaml", "namespace: fromenv\n")
    explicit = write(tmp_path / "explicit.yaml", "namespace: explicit\n")
    assert load_settings(environ={}).namespace == "local"
    assert load_settings(environ={"LEADCTL_CONFIG": str(from_env)}).namespace == "fromenv"
    assert load_settings(explicit, environ={"LEADCTL_CONFIG": str(from_env)}).namespace == "explicit"


def test_interpolation_and_env_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "providers:\n  twilio:\n    auth_token: ${TOKEN}\n    from: ${FROM:-+15550001}\n"
        "channels:\n  sms:\n    provider: twilio\n",
    )
    settings = load_settings(
        path,
        environ={
            "TOKEN": "s3cret",
            "LEADCTL_REDIS_URL": "redis://r:6379/1",
            "LEADCTL_DATABASE_URL": "postgresql://p/db",
            "LEADCTL_NAMESPACE": "shop",
            "LEADCTL_CHANNELS__SMS__WORKERS": "7",
            "LEADCTL_PROVIDERS__TWILIO__ACCOUNT_SID": "AC1",
        },
    )
    twilio = settings.provider("twilio")
    assert twilio.extra("auth_token") == "s3cret" and twilio.from_ == "+15550001"
    assert twilio.extra("account_sid") == "AC1"
    assert settings.redis.url == "redis://r:6379/1" and settings.database.url == "postgresql://p/db"
    assert settings.namespace == "shop" and settings.channel("sms").workers == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("namespace: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must hold a mapping"),
        ("namespace: Bad-Name\n", "namespace"),
        ("channels:\n  fax: {}\n", "unknown channel 'fax'"),
        ("worker:\n  batch_size: zero\n", "worker.batch_size"),
        ("providers:\n  twilio:\n    auth_token: ${NOT_SET_ANYWHERE}\n", "NOT_SET_ANYWHERE"),
        ("redis:\n  ulr: redis://typo\n", "redis.ulr"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("size", "use worker.batch_size"),
        ("interval_s", "worker.block_ms"),
        ("parallel", "use channels.<channel>.workers"),
    ],
)
def test_removed_batch_keys_say_what_replaced_them(tmp_path: Path, key: str, hint: str) -> None:
    """batch.size, batch.interval_s and batch.parallel did nothing; a config still holding one is
    refused, from the file or the environment, in one line naming the key and its replacement."""
    path = write(tmp_path / "old.yaml", f"batch:\n  max_seconds: 600\n  {key}: 5\n")
    with pytest.raises(ConfigError) as from_file:
        load_settings(path, environ={})
    empty = write(tmp_path / "empty.yaml", "{}\n")
    with pytest.raises(ConfigError) as from_env:
        load_settings(empty, environ={f"LEADCTL_BATCH__{key.upper()}": "5"})
    for error in (from_file, from_env):
        message = str(error.value)
        assert f"batch.{key} was removed: " in message and hint in message and "\n" not in message
    assert "batch.sizes: Extra inputs are not permitted" in _error(tmp_path, "batch:\n  sizes: 5\n")


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "any.yaml", text), environ={})
    return str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_shipped_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = Path(__file__).parent.parent / "configs" / "leadctl.yaml"
    settings = load_settings(shipped, environ={})
    assert settings.channel("sms").workers == 20 and settings.worker.batch_size == 1000
    assert settings.batch.max_seconds == 14 * 60
    assert settings.alerts.queue_size == 10_000
