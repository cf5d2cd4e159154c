"""No secret, full phone number or message text in logs, metrics, errors or answers."""

from __future__ import annotations

import base64

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import SEND, call
from tests.support.gatewayproc import ADMIN_TOKEN, API_KEY, CLIENT_TOKEN, WEBHOOK_SECRET
from tests.support.simproc import SimProcess

NUMBER = "+6591234567"
TEXT = "my secret message text 4242"


async def test_secrets_numbers_and_text_never_leak(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(policy={"opt_in": "off"})
    errors: list[str] = []  # the gateway's own error answers
    answers: list[str] = []  # every answer, 8x8's included

    async def record(*args: object, **kw: object) -> None:
        status, headers, body = await call(*args, **kw)  # type: ignore[arg-type]
        answers.append(f"{status} {headers} {body!r}")
        if "X-Gateway-Reject" in headers:
            errors.append(answers[-1])

    body = {"user": {"msisdn": NUMBER}, "type": "text", "content": {"text": TEXT}}
    await record(gw.url, SEND, body)
    await record(gw.url, SEND, body, headers={"Authorization": f"Bearer {CLIENT_TOKEN}x"})
    await record(gw.url, SEND, {"user": {"msisdn": NUMBER + "99999999"}, "content": TEXT})
    await record(
        gw.url, "/sms/api/v1/subaccounts/acme_main/messages", {"destination": NUMBER, "text": TEXT}
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    await record(
        gw.url, f"/admin/v1/accounts/acme/optouts/{NUMBER}", None, method="PUT", headers=admin
    )
    await record(
        gw.url,
        f"/admin/v1/accounts/acme/optouts/{NUMBER}",
        None,
        method="GET",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}-wrong"},
    )
    await record(gw.url, SEND, body)  # now opted out
    basic = base64.b64encode(f"8x8:{WEBHOOK_SECRET}".encode()).decode()
    inbound = {
        "namespace": "SMS",
        "eventType": "inbound_message_received",
        "payload": {"source": NUMBER, "body": "START"},
    }
    await record(gw.url, "/webhooks/inbound", inbound, headers={"Authorization": f"Basic {basic}"})
    await record(gw.url, f"/webhooks/inbound?token={WEBHOOK_SECRET}-no", inbound)
    await record(gw.url, "/metrics", None, method="GET")

    assert gw.stop() == 0  # every buffered line is written out
    logs = gw.log_text()
    assert "recipient.opted_out" in logs and len(errors) >= 5  # they were exercised
    everything = logs + "\n".join(answers)
    for secret in (API_KEY, CLIENT_TOKEN, ADMIN_TOKEN, WEBHOOK_SECRET, TEXT, basic):
        assert secret not in everything, secret
    # numbers: 8x8's answers echo them and the admin API looks them up; nowhere else
    ours = logs + "\n".join(errors) + answers[-1]
    for number in (NUMBER, NUMBER[1:], "91234567"):
        assert number not in ours, number
    assert "Traceback" not in logs
