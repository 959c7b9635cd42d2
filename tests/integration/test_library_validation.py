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


def via(**fields: Any) -> str:
    return json.dumps(fields)


class TestWhatTheApiAdds:
    """flashcall_start's and flashcall_check's second argument: what the HTTP API brought
    beside the body (worker/api/app.py)."""

    def test_the_id_of_the_api_stands_for_a_missing_body_id(self, library: redis.Redis) -> None:
        answer = functions.start(json.dumps({"phone": PHONE}), via=via(id="order-7")).run(library)

        assert answer == {"id": "order-7", "status": "pending", "created": True}

    def test_the_same_id_in_the_body_and_from_the_api_is_taken(self, library: redis.Redis) -> None:
        request = json.dumps({"id": "order-7", "phone": PHONE})

        assert functions.start(request, via=via(id="order-7")).run(library)["created"] is True

    def test_a_body_id_other_than_the_apis_is_refused(self, library: redis.Redis) -> None:
        request = json.dumps({"id": "order-7", "phone": PHONE})

        assert refusal(library, functions.start(request, via=via(id="order-8"))) == (
            "flashcall: 'id' differs from the id the request names in its URL or its Idempotency-Key header"
        )

    def test_a_malformed_id_from_the_api_gets_the_id_error(self, library: redis.Redis) -> None:
        call = functions.start(json.dumps({"phone": PHONE}), via=via(id="order 7"))

        assert refusal(library, call).startswith("flashcall: 'id' must be 1 to 128 characters")

    def test_the_key_name_is_written_into_the_metadata(self, library: redis.Redis) -> None:
        request = json.dumps({"id": "order-7", "phone": PHONE, "metadata": {"user": "u-1"}})
        functions.start(request, via=via(api_key="shop")).run(library)

        assert functions.status("order-7").run(library)["metadata"] == {"user": "u-1", "api_key": "shop"}

    def test_a_key_name_in_the_body_is_replaced_by_the_apis(self, library: redis.Redis) -> None:
        request = json.dumps({"id": "order-7", "phone": PHONE, "metadata": {"api_key": "other"}})
        functions.start(request, via=via(api_key="shop")).run(library)

        assert functions.status("order-7").run(library)["metadata"] == {"api_key": "shop"}

    def test_the_key_name_counts_against_the_metadata_limit(self, library: redis.Redis) -> None:
        metadata = {"note": "x" * (1024 - len('{"note":""}'))}
        request = json.dumps({"id": "order-7", "phone": PHONE, "metadata": metadata})
        functions.start(request).run(library)

        with pytest.raises(redis.ResponseError, match="'metadata' is 1041 bytes, the limit is 1024"):
            functions.start(request.replace("order-7", "order-8"), via=via(api_key="shop")).run(library)

    def test_a_metadata_that_is_not_an_object_keeps_its_error(self, library: redis.Redis) -> None:
        request = json.dumps({"id": "order-7", "phone": PHONE, "metadata": "x"})

        assert refusal(library, functions.start(request, via=via(api_key="shop"))) == (
            "flashcall: 'metadata' must be a JSON object"
        )

    @pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ключ"])
    def test_a_malformed_key_name_is_refused(self, library: redis.Redis, name: str) -> None:
        request = json.dumps({"id": "order-7", "phone": PHONE})

        assert refusal(library, functions.start(request, via=via(api_key=name))) == (
            "flashcall: 'api_key' must be 1 to 64 letters, digits, _ and -"
        )

    @pytest.mark.parametrize(
        "second", ["", "nope", "[]", '{"phone":"+79991234567"}', '{"api_key":"shop","x":1}']
    )
    def test_a_second_argument_that_is_not_the_apis_is_refused(
        self, library: redis.Redis, second: str
    ) -> None:
        request = json.dumps({"id": "order-7", "phone": PHONE})

        assert refusal(library, functions.start(request, via=second)) == (
            "flashcall: the second argument must be a JSON object of what the HTTP API adds "
            "(docs/protocol.md)"
        )

    def test_a_check_takes_its_id_from_the_api(self, library: redis.Redis) -> None:
        reply_key = functions.check(json.dumps({"code": "4567"}), via=via(id="nobody")).run(library)

        assert json.loads(cast(bytes, library.lpop(reply_key))) == {"id": "nobody", "result": "not_found"}

    def test_a_check_takes_no_key_name(self, library: redis.Redis) -> None:
        call = functions.check(json.dumps({"code": "4567"}), via=via(id="nobody", api_key="shop"))

        assert refusal(library, call).startswith("flashcall: the second argument must be")

    def test_a_check_answers_on_the_reply_key_its_reply_token_names(self, library: redis.Redis) -> None:
        token = "a1" * 16
        call = functions.check(json.dumps({"code": "4567"}), via=via(id="nobody", reply=token))

        reply_key = call.run(library)

        assert reply_key == functions.reply_key_of(token) == f"{keys.PREFIX}reply:api:{token}"
        assert json.loads(cast(bytes, library.lpop(reply_key))) == {"id": "nobody", "result": "not_found"}

    @pytest.mark.parametrize("token", ["a" * 15, "a" * 65, "a" * 31 + "-", "ключ" * 8, 1234567890123456789])
    def test_a_malformed_reply_token_is_refused(self, library: redis.Redis, token: object) -> None:
        call = functions.check(json.dumps({"code": "4567"}), via=via(id="nobody", reply=token))

        assert refusal(library, call) == "flashcall: 'reply' must be 16 to 64 letters and digits"

    def test_a_reply_token_an_earlier_check_used_is_refused(self, library: redis.Redis) -> None:
        start(library, id="order-7", phone=PHONE)
        call = functions.check(json.dumps({"id": "order-7", "code": "4567"}), via=via(reply="b" * 32))
        reply_key = call.run(library)
        seconds, micros = library.time()
        now_ms = seconds * 1000 + micros // 1000
        functions.apply_check("order-7", proof="0", reply_key=reply_key, now_ms=now_ms).run(library)

        assert refusal(library, call) == (
            "flashcall: 'reply' was used by an earlier check of this verification: draw a new one"
        )

    def test_a_start_takes_no_reply_token(self, library: redis.Redis) -> None:
        call = functions.start(json.dumps({"id": "order-7", "phone": PHONE}), via=via(reply="c" * 32))

        assert refusal(library, call).startswith("flashcall: the second argument must be")
