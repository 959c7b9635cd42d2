"""Settings read from the environment: the callback root handed to providers."""

from __future__ import annotations

import pytest

from worker.core.errors import ConfigurationError
from worker.process.settings import Settings


def settings_with_callback_root(url: str) -> Settings:
    return Settings.from_env({"FLASHCALL_CALLBACK_BASE_URL": url}, require_secret=False)


@pytest.mark.parametrize(
    "url", ["https://callbacks.example.com", "http://10.0.0.5:8700", "https://example.com/flashcall/"]
)
def test_an_http_root_is_the_callback_base_url(url: str) -> None:
    assert settings_with_callback_root(url).callback_base_url == url


def test_without_a_callback_root_statuses_are_polled() -> None:
    assert Settings.from_env({}, require_secret=False).callback_base_url is None


@pytest.mark.parametrize(
    "url",
    [
        "callbacks.example.com",
        "ftp://callbacks.example.com",
        "https://",
        "https://callbacks.example.com:port",
        "https://callbacks.example.com:0",
        "https://callbacks.example.com/?token=1",
        "https://callbacks.example.com/#top",
    ],
)
def test_a_callback_root_providers_could_not_post_to_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="FLASHCALL_CALLBACK_BASE_URL must be the public"):
        settings_with_callback_root(url)


def test_a_refused_callback_root_is_not_repeated_in_the_message() -> None:
    with pytest.raises(ConfigurationError) as refused:
        settings_with_callback_root("ftp://user:hunter2-password@callbacks.example.com")

    assert "hunter2" not in str(refused.value)
