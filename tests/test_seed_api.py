"""The ait_openapi README's remaining snippets, with gateway_otel imported instead."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from gateway_otel import (
    AuthorizationException,
    GatewayOtelError,
    OperationLog,
    account_balance_enough,
    check_configuration,
    submit_log,
    support_model,
    trace_id_context,
    validate_token,
)

from conftest import Gateway


def test_check_configuration_is_true_with_a_reachable_gateway(pipeline: Any) -> None:
    assert check_configuration() is True
    assert check_configuration(connect=True) is True


def test_token_checks(pipeline: Any, gateway: Gateway) -> None:
    assert validate_token("demo-alice") == "alice"
    assert validate_token("Bearer demo-bob") == "bob"
    assert support_model("demo-alice", "model_name") is True
    # Against bob's balance as the gateway holds it now (other tests may have billed bob before).
    balance = gateway.balance("bob")
    assert account_balance_enough("demo-bob", cost=max(0.0, balance - 1.0)) is True
    assert account_balance_enough("demo-bob", cost=balance + 1e6) is False


def test_a_bad_token_raises_authorization_exception(pipeline: Any) -> None:
    with pytest.raises(AuthorizationException):
        validate_token("not-a-token")
    assert issubclass(AuthorizationException, GatewayOtelError)


def test_submit_log_delivers_a_hand_made_record(pipeline: Any, healthy_gateway: Gateway, flush: Any) -> None:
    request_id = uuid.uuid4().hex
    token = trace_id_context.set(request_id)
    try:
        submit_log(
            OperationLog(
                request_id=request_id,
                caller_id="bob",
                request_url="/x",
                op_type="manual",
                request={"password": "p", "n": 1},
            )
        )
        submit_log({"opType": "manual_dict", "opLogType": "in", "request": {"k": {1, 2}}})
    finally:
        trace_id_context.reset(token)
    flush()
    records = {r["opType"]: r for r in healthy_gateway.wait_records(request_id, 2)}
    assert records["manual"]["callerId"] == "bob"
    assert records["manual"]["request"] == {"password": "[REDACTED]", "n": 1}
    assert records["manual_dict"]["requestId"] == request_id
    assert sorted(records["manual_dict"]["request"]["k"]) == [1, 2]
