"""routing.yaml: what `load_routing` accepts, and errors that name the file, the line and the
dotted field (`path:LINE: providers.vp.timeout: ...`) for what it refuses.

Also specifies `parse_duration`, `url_override_variable` and `Policy.steps_for`. Routing
files are written to pytest's `tmp_path`; the environment is passed as a plain mapping.
One test registers a stub provider type (`FlashOnly`, below) to reach the check of a
channel that a provider type does not offer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Self

import pydantic
import pytest

from worker.cli import main
from worker.core.errors import RoutingFileError
from worker.core.verification import Channel
from worker.providers.base import Provider, SendRequest, SendResult
from worker.providers.registry import PROVIDER_TYPES
from worker.routing.config import (
    DEFAULT_FALLBACK_ON,
    Policy,
    Step,
    load_routing,
    parse_duration,
    url_override_variable,
)

REPOSITORY = Path(__file__).resolve().parents[2]

# Line numbers matter: the tests below name them.
VALID = """\
providers:
  vp:
    type: voicepassword
    base_url: https://vp.example.test/
    credentials: {api_key: env:VP_KEY}
    timeout: 5s
    channels:
      flashcall: {cost: 0.35}
      voice: {cost: 0.35}
policies:
  default:
    steps:
      - {channel: flashcall, timeout: 60s}
      - {channel: voice}
"""


def replaced(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the routing text exactly once"
    return text.replace(old, new)


def write(tmp_path: Path, text: str, name: str = "routing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(RoutingFileError) as caught:
        load_routing(path, environ={} if environ is None else environ)
    return str(caught.value)


# --- files that load ------------------------------------------------------------------


def test_repository_routing_file_loads() -> None:
    config = load_routing(REPOSITORY / "routing.yaml", environ={})

    assert set(config.providers) == {"voicepassword", "mobilgroup", "telphin", "gateway"}
    assert {name: entry.type for name, entry in config.providers.items()} == {
        "voicepassword": "voicepassword",
        "mobilgroup": "mobilgroup",
        "telphin": "telphin",
        "gateway": "gateway",
    }
    assert set(config.policies) == {"default", "voice_first"}
    default = config.policies["default"]
    assert [(step.channel, step.timeout) for step in default.steps] == [
        (Channel.FLASHCALL, 60.0),
        (Channel.VOICE, 90.0),
        (Channel.SMS, None),
    ]
    assert config.providers["voicepassword"].base_url == "https://vp.voicepassword.ru"
    assert config.providers["telphin"].base_url == "https://flashcall.telphin.ru"
    assert config.providers["mobilgroup"].base_url == "https://voice.mobilgroup.ru"


def test_integration_test_routing_file_loads() -> None:
    config = load_routing(REPOSITORY / "tests" / "routing.test.yaml", environ={})

    assert set(config.providers) == {"vp-main", "vp-backup", "tel"}
    assert set(config.policies) == {"default", "flash_only", "strict", "telphin_first"}
    assert config.policies["strict"].fallback_on == frozenset({"busy", "no_answer"})
    assert config.providers["vp-main"].timeout == 2.0


def test_valid_file_reads_every_field(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, VALID), environ={})

    provider = config.providers["vp"]
    assert provider.type == "voicepassword"
    assert provider.timeout == 5.0
    assert provider.enabled is True
    assert {channel: offer.cost for channel, offer in provider.channels.items()} == {
        Channel.FLASHCALL: Decimal("0.35"),
        Channel.VOICE: Decimal("0.35"),
    }
    assert provider.credential_variables() == {"api_key": "VP_KEY"}


def test_policy_without_fallback_on_uses_the_default_triggers(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, VALID), environ={})

    assert config.policies["default"].fallback_on == frozenset(DEFAULT_FALLBACK_ON)


def test_loaded_config_is_frozen(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, VALID), environ={})

    with pytest.raises(pydantic.ValidationError):
        config.providers["vp"].timeout = 1.0  # type: ignore[misc]


# --- URLs -----------------------------------------------------------------------------


def test_base_url_loses_its_trailing_slash(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, VALID), environ={})

    assert config.providers["vp"].base_url == "https://vp.example.test"


@pytest.mark.parametrize(
    ("provider_name", "variable"),
    [("vp", "FLASHCALL_VP_URL"), ("vp-main", "FLASHCALL_VP_MAIN_URL"), ("tel_2", "FLASHCALL_TEL_2_URL")],
)
def test_url_override_variable_is_the_upper_cased_name_with_underscores(
    provider_name: str, variable: str
) -> None:
    assert url_override_variable(provider_name) == variable


def test_url_override_from_the_environment_replaces_the_files_url(tmp_path: Path) -> None:
    environ = {"FLASHCALL_VP_URL": "http://127.0.0.1:8081/"}

    config = load_routing(write(tmp_path, VALID), environ=environ)

    assert config.providers["vp"].base_url == "http://127.0.0.1:8081"


def test_url_override_of_another_provider_changes_nothing(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, VALID), environ={"FLASHCALL_OTHER_URL": "http://127.0.0.1:1"})

    assert config.providers["vp"].base_url == "https://vp.example.test"


def test_url_override_is_read_from_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHCALL_VP_URL", "http://sandbox.test:9000")

    config = load_routing(write(tmp_path, VALID))

    assert config.providers["vp"].base_url == "http://sandbox.test:9000"


def test_url_override_is_validated_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)

    message = error_of(path, {"FLASHCALL_VP_URL": "sandbox:9000"})

    assert message == f"{path}:4: providers.vp.base_url: must be an http:// or https:// URL"


# --- errors name the file, the line and the field -------------------------------------


def test_bad_duration_names_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("timeout: 5s", "timeout: 5 parsecs"))

    assert error_of(path) == f"{path}:6: providers.vp.timeout: a duration such as 500ms, 5s, 2m, 1h or 1d"


def test_negative_cost_names_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("flashcall: {cost: 0.35}", "flashcall: {cost: -0.35}"))

    message = error_of(path)

    assert message.startswith(f"{path}:8: providers.vp.channels.flashcall.cost: ")
    assert "greater than or equal to 0" in message


def test_literal_credential_is_refused_in_favour_of_an_env_reference(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("env:VP_KEY", "hunter2-literal-key"))

    message = error_of(path)

    assert message == (
        f"{path}:5: providers.vp.credentials: "
        "api_key: credentials come only from the environment, write env:VARIABLE_NAME"
    )


def test_literal_credential_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("env:VP_KEY", "hunter2-literal-key"))

    assert "hunter2" not in error_of(path)


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("    timeout: 5s\n", "    timeout: 5s\n    colour: red\n"))

    assert error_of(path) == f"{path}:7: providers.vp.colour: Extra inputs are not permitted"


def test_unknown_top_level_section_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "colours: {}\n")

    assert error_of(path) == f"{path}:15: colours: Extra inputs are not permitted"


def test_unknown_provider_type_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("type: voicepassword", "type: carrier-pigeon"))

    assert (
        error_of(path) == f"{path}:2: providers.vp: type must be one of {', '.join(sorted(PROVIDER_TYPES))}"
    )


class FlashOnly(Provider):
    """Stub provider type offering only flash calls (registered by one test; never sends)."""

    type: ClassVar[str] = "flashonly"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.FLASHCALL})
    credential_names: ClassVar[frozenset[str]] = frozenset({"api_key"})

    @classmethod
    def from_config(
        cls,
        name: str,
        *,
        base_url: str,
        timeout: float,
        credentials: Mapping[str, str],
        options: Mapping[str, str],
    ) -> Self:
        return cls(name, timeout=timeout)

    async def send(self, request: SendRequest) -> SendResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def test_channel_the_provider_type_lacks_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    types = dict(PROVIDER_TYPES)
    types[FlashOnly.type] = FlashOnly
    monkeypatch.setattr("worker.routing.config.PROVIDER_TYPES", types)
    path = write(tmp_path, replaced("type: voicepassword", "type: flashonly"))

    assert error_of(path) == f"{path}:2: providers.vp: a flashonly provider has no channel voice"


def test_unknown_channel_name_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("voice: {cost: 0.35}", "telegram: {cost: 0.35}"))

    message = error_of(path)

    assert message.startswith(f"{path}:9: providers.vp.channels.telegram")
    assert "'flashcall', 'voice' or 'sms'" in message


def test_missing_required_credential_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("{api_key: env:VP_KEY}", "{}"))

    assert error_of(path) == f"{path}:2: providers.vp: credentials of a voicepassword provider need api_key"


def test_unknown_credential_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("{api_key: env:VP_KEY}", "{api_key: env:VP_KEY, token: env:VP_TOKEN}"))

    assert error_of(path) == f"{path}:2: providers.vp: unknown credentials token for a voicepassword provider"


def test_unknown_option_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("    timeout: 5s\n", "    timeout: 5s\n    options: {colour: red}\n"))

    assert error_of(path) == f"{path}:2: providers.vp: unknown options colour for a voicepassword provider"


@pytest.mark.parametrize("trigger", ["weather", "delivered"])
def test_unknown_fallback_trigger_is_refused_with_the_choices(tmp_path: Path, trigger: str) -> None:
    path = write(tmp_path, VALID + f"    fallback_on: [busy, {trigger}]\n")

    assert error_of(path) == (
        f"{path}:15: policies.default.fallback_on: unknown {trigger}; choose from bad_number, "
        "breaker_open, busy, no_answer, not_enough_money, provider_error, refused, timeout"
    )


def test_missing_default_policy_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("  default:", "  custom:"))

    assert error_of(path) == f"{path}:10: policies: policies must include one named default"


def test_step_naming_an_unknown_provider_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("- {channel: voice}", "- {channel: voice, providers: [vp, nope]}"))

    assert error_of(path) == f"{path}:14: policies.default.steps.1.providers: unknown provider nope"


def test_step_channel_that_no_provider_offers_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("- {channel: voice}", "- {channel: sms}"))

    assert error_of(path) == f"{path}:14: policies.default.steps.1.channel: no provider offers sms"


def test_policy_without_steps_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("      - {channel: flashcall, timeout: 60s}\n      - {channel: voice}\n", "")
    path = write(tmp_path, replaced("    steps:\n", "    steps: []\n", text))

    assert error_of(path).startswith(f"{path}:12: policies.default.steps: ")


def test_invalid_yaml_names_the_line_of_the_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("timeout: 5s", "timeout: 5s: x"))

    assert error_of(path) == f"{path}:6: not valid YAML: mapping values are not allowed here"


@pytest.mark.parametrize("text", ["", "- providers\n", "just text\n"], ids=["empty", "list", "scalar"])
def test_file_that_is_not_a_mapping_is_refused_at_line_1(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    assert error_of(path) == f"{path}:1: expected a mapping with providers and policies"


def test_missing_file_is_reported_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    assert error_of(path) == f"{path}: cannot read: No such file or directory"


def test_directory_is_reported_as_unreadable(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path}: cannot read: Is a directory"


def test_file_that_is_not_utf8_is_reported_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_bytes(b"# caf\xe9 (latin-1)\n" + VALID.encode())

    assert error_of(path).startswith(f"{path}")


def test_providers_written_as_a_list_is_an_error_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("providers:\n  vp:\n", "providers:\n  - vp:\n"))

    assert error_of(path).startswith(f"{path}:1: providers: ")


def test_several_errors_are_reported_together_in_file_order(tmp_path: Path) -> None:
    text = replaced("timeout: 5s", "timeout: soon")
    path = write(tmp_path, replaced("flashcall: {cost: 0.35}", "flashcall: {cost: -1}", text))

    lines = error_of(path).splitlines()

    assert len(lines) == 2
    assert lines[0] == f"{path}:6: providers.vp.timeout: a duration such as 500ms, 5s, 2m, 1h or 1d"
    assert lines[1].startswith(f"{path}:8: providers.vp.channels.flashcall.cost: ")


def test_errors_in_two_providers_name_each_provider(tmp_path: Path) -> None:
    second = (
        "  vp2:\n"
        "    type: voicepassword\n"
        "    base_url: ftp://vp2.example.test\n"
        "    credentials: {api_key: env:VP2_KEY}\n"
        "    channels: {voice: {cost: 1}}\n"
    )
    text = replaced("policies:\n", second + "policies:\n", replaced("timeout: 5s", "timeout: 0"))
    path = write(tmp_path, text)

    assert error_of(path).splitlines() == [
        f"{path}:6: providers.vp.timeout: a duration must be a positive, finite number",
        f"{path}:12: providers.vp2.base_url: must be an http:// or https:// URL",
    ]


# --- Policy.steps_for -----------------------------------------------------------------


def three_step_policy() -> Policy:
    return Policy.model_validate(
        {
            "steps": [
                {"channel": "flashcall", "timeout": "60s"},
                {"channel": "voice", "timeout": "90s", "providers": ["vp"]},
                {"channel": "sms"},
            ]
        }
    )


def test_steps_for_no_requested_channels_is_every_step_in_policy_order() -> None:
    policy = three_step_policy()

    assert policy.steps_for(()) == policy.steps


def test_steps_for_requested_channels_follows_the_request_order() -> None:
    steps = three_step_policy().steps_for((Channel.VOICE, Channel.FLASHCALL))

    assert steps == (
        Step(channel=Channel.VOICE, timeout=90.0, providers=("vp",)),
        Step(channel=Channel.FLASHCALL, timeout=60.0),
    )


def test_steps_for_a_channel_the_policy_lacks_is_a_default_step() -> None:
    policy = Policy.model_validate({"steps": [{"channel": "flashcall", "timeout": "60s"}]})

    assert policy.steps_for((Channel.FLASHCALL, Channel.SMS)) == (
        Step(channel=Channel.FLASHCALL, timeout=60.0),
        Step(channel=Channel.SMS, timeout=None, providers=None),
    )


def test_steps_for_a_channel_listed_twice_in_the_policy_takes_its_first_step() -> None:
    policy = Policy.model_validate(
        {"steps": [{"channel": "voice", "timeout": "30s"}, {"channel": "voice", "timeout": "90s"}]}
    )

    assert policy.steps_for((Channel.VOICE,)) == (Step(channel=Channel.VOICE, timeout=30.0),)


# --- parse_duration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (" 90 s ", 90.0),
        ("10", 10.0),
        (7, 7.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_reads_units_and_plain_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        0,
        0.0,
        "0s",
        "0ms",
        -1,
        -0.5,
        "-5s",
        True,
        False,
        "5x",
        "5 sec",
        "",
        "s",
        "five seconds",
        None,
        [5],
        {},
    ],
)
def test_parse_duration_rejects_zero_negatives_booleans_and_junk(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_parse_duration_rejects_nan() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(math.nan)


def test_duration_written_as_a_yaml_number_is_seconds(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, replaced("timeout: 5s", "timeout: 3")), environ={})

    assert config.providers["vp"].timeout == 3.0


def test_duration_in_milliseconds_loads_as_a_fraction_of_a_second(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, replaced("timeout: 5s", "timeout: 750ms")), environ={})

    assert config.providers["vp"].timeout == 0.75


def gateway_file(tmp_path: Path, channels: str, options: str) -> Path:
    return write(
        tmp_path,
        "providers:\n"
        "  gw:\n"
        "    type: gateway\n"
        "    base_url: https://gw.example.test/send\n"
        "    credentials: {login: env:GW_LOGIN, password: env:GW_PASSWORD}\n"
        f"    channels: {channels}\n"
        f"    options: {options}\n"
        "policies:\n"
        "  default:\n"
        "    steps: [{channel: flashcall}]\n",
    )


def test_an_option_value_the_provider_type_refuses_is_an_error_naming_the_provider(tmp_path: Path) -> None:
    path = gateway_file(tmp_path, "{flashcall: {cost: 1}}", '{ttl: "9"}')

    assert error_of(path) == f"{path}:2: providers.gw: option ttl must be minutes from 1 to 5, not '9'"


def test_a_channel_the_options_make_unservable_is_an_error(tmp_path: Path) -> None:
    path = gateway_file(tmp_path, "{flashcall: {cost: 1}, voice: {cost: 1}}", "{variant: flashcall}")

    assert (
        error_of(path) == f"{path}:2: providers.gw: with these options, a gateway provider cannot serve voice"
    )


@pytest.mark.parametrize("name", ["routing.yaml", "docs/examples/telphin.yaml", "docs/examples/gateway.yaml"])
def test_the_shipped_routing_files_are_valid(name: str) -> None:
    assert load_routing(Path(__file__).resolve().parents[2] / name, {}).providers


# --- learning and operator ranges --------------------------------------------------------


def test_routing_without_a_learning_section_does_not_learn(tmp_path: Path) -> None:
    assert load_routing(write(tmp_path, VALID), environ={}).learning is None


def test_an_empty_learning_section_takes_the_documented_defaults(tmp_path: Path) -> None:
    learning = load_routing(write(tmp_path, VALID + "learning: {}\n"), environ={}).learning

    assert learning is not None
    assert (
        learning.explore,
        learning.min_samples,
        learning.memory,
        learning.half_life,
        learning.hysteresis,
    ) == (
        0.05,
        20,
        50,
        86400.0,
        0.1,
    )


def test_an_exploration_share_above_half_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "learning: {explore: 0.9}\n")

    assert "learning.explore: Input should be less than or equal to 0.5" in error_of(path)


def test_a_provider_allowed_an_unknown_operator_range_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, replaced("    timeout: 5s\n", "    timeout: 5s\n    operators: [north]\n"))

    assert error_of(path) == (
        f"{path}:7: providers.vp.operators: unknown operator range north; "
        "name it under operators, or use mts, megafon, beeline, t2, other"
    )


def test_a_named_operator_range_may_be_allowed(tmp_path: Path) -> None:
    text = (
        replaced("    timeout: 5s\n", "    timeout: 5s\n    operators: [north, mts]\n")
        + 'operators: {north: ["7921"]}\n'
    )

    assert load_routing(write(tmp_path, text), environ={}).providers["vp"].operators == ("north", "mts")


def test_an_operator_range_prefix_must_be_a_russian_number_prefix(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + 'operators: {north: ["8921"]}\n')

    assert "operators.north.0: String should match pattern" in error_of(path)


# --- credentials the environment lacks ----------------------------------------------


def test_unset_credentials_names_the_variables_of_enabled_providers_the_environment_lacks(
    tmp_path: Path,
) -> None:
    config = load_routing(write(tmp_path, VALID), environ={})

    assert config.unset_credentials({}) == ["VP_KEY"]
    assert config.unset_credentials({"VP_KEY": "secret"}) == []


def test_unset_credentials_leaves_out_a_disabled_provider(tmp_path: Path) -> None:
    text = VALID.replace("policies:", DISABLED_GATEWAY + "policies:")
    config = load_routing(write(tmp_path, text), environ={})

    assert config.unset_credentials({}) == ["VP_KEY"]


def test_routing_check_of_the_shipped_file_notes_no_credential_of_its_disabled_gateway(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("VOICEPASSWORD_API_KEY", "MOBILGROUP_API_KEY", "TELPHIN_APP_ID", "TELPHIN_APP_SECRET"):
        monkeypatch.setenv(variable, "set")
    for variable in ("GATEWAY_LOGIN", "GATEWAY_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)

    assert main(["routing", "check", str(REPOSITORY / "routing.yaml")]) == 0

    assert "note:" not in capsys.readouterr().out


def test_routing_check_notes_the_credentials_an_enabled_provider_lacks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELPHIN_APP_SECRET", raising=False)

    assert main(["routing", "check", str(REPOSITORY / "routing.yaml")]) == 0

    assert "TELPHIN_APP_SECRET" in capsys.readouterr().out


DISABLED_GATEWAY = """\
  gateway:
    type: gateway
    base_url: https://gateway.example.test/api/message
    credentials: {login: env:GATEWAY_LOGIN, password: env:GATEWAY_PASSWORD}
    enabled: false
    channels:
      flashcall: {cost: 0.45}
"""
