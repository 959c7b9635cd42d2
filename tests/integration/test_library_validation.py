"""flashcall_start's definition of a valid phone number and client address, on a real
redis-server, against the tables (tests/cases/) the Python side is tested against in
tests/unit/test_shared_cases.py; and the JSON numerals it takes in every request."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import redis

from tests.support import cases
from worker.core import keys
from worker.redis import functions

pytestmark = pytest.mark.integration

PHONE = "+79991234567"


def _why(case: dict[str, Any]) -> str:
    return str(case["why"])


def start(client: redis.Redis, **fields: Any) -> dict[str, Any]:
    return functions.start(json.dumps({"id": "order-42", **fields})).run(client)


def refusal(client: redis.Redis, call: functions.Call[Any]) -> str:
    """The error text a request gets (after "ERR "), failing the test if it is accepted."""
    with pytest.raises(redis.ResponseError) as refused:
        call.run(client)
    return str(refused.value)


def not_json(token: str) -> str:
    return f"flashcall: request is not a JSON object: {token} is not a JSON number"


class TestPhone:
    @pytest.mark.parametrize("case", [c for c in cases("phones") if c["normal"]], ids=_why)
    def test_an_accepted_number_is_stored_in_its_normal_form(
        self, library: redis.Redis, case: dict[str, Any]
    ) -> None:
        start(library, phone=case["input"])

        assert library.hget(keys.verification("order-42"), "phone") == case["normal"]

    @pytest.mark.parametrize("case", [c for c in cases("phones") if not c["normal"]], ids=_why)
    def test_a_refused_number_gets_the_phone_error(self, library: redis.Redis, case: dict[str, Any]) -> None:
        request = json.dumps({"id": "order-42", "phone": case["input"]})

        assert refusal(library, functions.start(request)) == (
            "flashcall: 'phone' must be a Russian number: +7XXXXXXXXXX, 7XXXXXXXXXX or 8XXXXXXXXXX"
        )


class TestClientIp:
    @pytest.mark.parametrize("case", [c for c in cases("ips") if c["valid"]], ids=_why)
    def test_an_accepted_address_is_kept_as_written(self, library: redis.Redis, case: dict[str, Any]) -> None:
        start(library, phone=PHONE, client_ip=case["input"])

        created = cast(list[tuple[str, dict[str, str]]], library.xrange(keys.EVENTS))[0][1]
        assert created["client_ip"] == case["input"]

    @pytest.mark.parametrize("case", [c for c in cases("ips") if not c["valid"]], ids=_why)
    def test_a_refused_address_gets_the_client_ip_error(
        self, library: redis.Redis, case: dict[str, Any]
    ) -> None:
        request = json.dumps({"id": "order-42", "phone": PHONE, "client_ip": case["input"]})

        assert refusal(library, functions.start(request)) == (
            "flashcall: 'client_ip' must be an IPv4 or IPv6 address"
        )


#: Numerals Lua cjson reads (with strtod) that JSON does not have.
NOT_JSON = ["0x40", "0X40", "0x1p4", "+60", "+1e2", "012", "00", "-012", "1.", "600.", "NaN", "-NaN", "nan",
            "Infinity", "-Infinity", "inf", "-inf"]  # fmt: skip
#: JSON numerals of 600.
JSON_600 = ["600", "600.0", "6e2", "6E2", "6e+2", "6.0E2", "60000e-2"]


def raw(request: str, token: str) -> str:
    return request.replace('"NUMBER"', token)


class TestNumerals:
    @pytest.mark.parametrize("field", ["ttl", "code_length"])
    @pytest.mark.parametrize("token", NOT_JSON)
    def test_a_numeral_json_has_not_is_refused_in_a_start_field(
        self, library: redis.Redis, field: str, token: str
    ) -> None:
        request = raw(json.dumps({"id": "order-42", "phone": PHONE, field: "NUMBER"}), token)

        assert refusal(library, functions.start(request)) == not_json(token)
        assert library.dbsize() == 0

    @pytest.mark.parametrize("token", NOT_JSON)
    def test_a_numeral_json_has_not_is_refused_in_the_metadata(
        self, library: redis.Redis, token: str
    ) -> None:
        request = raw(json.dumps({"id": "order-42", "phone": PHONE, "metadata": {"n": ["NUMBER"]}}), token)

        assert refusal(library, functions.start(request)) == not_json(token)

    @pytest.mark.parametrize("token", NOT_JSON)
    def test_a_numeral_json_has_not_is_refused_in_a_check(self, library: redis.Redis, token: str) -> None:
        request = raw(json.dumps({"id": "order-42", "code": "NUMBER"}), token)

        assert refusal(library, functions.check(request)) == not_json(token)

    def test_a_long_numeral_is_shown_shortened(self, library: redis.Redis) -> None:
        request = raw(json.dumps({"id": "order-42", "phone": PHONE, "ttl": "NUMBER"}), "0" * 40 + "600")

        assert refusal(library, functions.start(request)) == not_json("0" * 24 + "...")

    @pytest.mark.parametrize("token", JSON_600)
    def test_a_json_numeral_is_read_as_its_value(self, library: redis.Redis, token: str) -> None:
        request = raw(json.dumps({"id": "order-42", "phone": PHONE, "ttl": "NUMBER"}), token)

        functions.start(request).run(library)

        assert library.hget(keys.verification("order-42"), "ttl") == "600"

    @pytest.mark.parametrize("token", ["0", "-0", "6e-1"])
    def test_a_json_numeral_out_of_range_gets_the_fields_own_error(
        self, library: redis.Redis, token: str
    ) -> None:
        request = raw(json.dumps({"id": "order-42", "phone": PHONE, "ttl": "NUMBER"}), token)

        assert (
            refusal(library, functions.start(request))
            == "flashcall: 'ttl' must be an integer from 30 to 86400"
        )

    @pytest.mark.parametrize(
        "text",
        ['"0x40"', '"Infinity"', '"a\\"0x40"', '"\\\\"', '"+7 (999) 012"', "true", "false", "null"],
        ids=repr,
    )
    def test_what_looks_like_a_numeral_inside_a_string_or_a_literal_is_not_one(
        self, library: redis.Redis, text: str
    ) -> None:
        request = raw(json.dumps({"id": "order-42", "phone": PHONE, "metadata": {"n": "NUMBER"}}), text)

        assert functions.start(request).run(library)["created"] is True
