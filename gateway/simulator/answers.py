"""The answer of each 8x8 operation the simulator serves, in the shapes 8x8's OpenAPI
files (2026-07) document; request bodies reach them already checked against the operation's
schema when `routes` gives it one."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import shapes
from .accounts import page
from .app import Answer, Call, Simulator, parse_json
from .shapes import INVALID_PARAMETER, NOT_FOUND, ApiError

# --- sends -------------------------------------------------------------------------------


def chat_one(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer = shapes.chat_single(sim.ids, sim.clock, parse_json(call.raw))
    sim.recorder.sent(call.sub or "", 1)
    return 200, answer


def chat_batch(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer, accepted = shapes.chat_batch(sim.ids, sim.clock, parse_json(call.raw))
    sim.recorder.sent(call.sub or "", accepted)
    return 200, answer


def lon_one(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer = shapes.chat_single(sim.ids, sim.clock, parse_json(call.raw), lon=True)
    sim.recorder.sent(call.sub or "", 1)
    return 200, answer


def lon_batch(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer, accepted = shapes.chat_batch(sim.ids, sim.clock, parse_json(call.raw), lon=True)
    sim.recorder.sent(call.sub or "", accepted)
    return 200, answer


def sms_one(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer = shapes.sms_single(sim.ids, parse_json(call.raw))
    sim.recorder.sent(call.sub or "", 1)
    return 200, answer


def sms_batch(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer, accepted = shapes.sms_batch(sim.ids, parse_json(call.raw))
    sim.recorder.sent(call.sub or "", accepted)
    return 200, answer


def survey_one(sim: Simulator, call: Call) -> tuple[int, Any]:
    sim.recorder.sent(call.sub or "", 1)
    return 200, shapes.sms_answer(sim.ids, call.body, None)


def survey_batch(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer, accepted = shapes.survey_batch(sim.ids, call.body)
    sim.recorder.sent(call.sub or "", accepted)
    return 200, answer


def verify(sim: Simulator, call: Call) -> tuple[int, Any]:
    answer = shapes.verify_session(sim.ids, sim.clock, call.sub or "", parse_json(call.raw))
    sim.sessions[answer["sessionId"]] = answer
    sim.recorder.sent(call.sub or "", 1)
    return 200, answer


# --- the rest, by what they answer ---------------------------------------------------------


def empty(status: int) -> Answer:
    def answer(sim: Simulator, call: Call) -> tuple[int, Any]:
        return status, None

    return answer


def fixed(status: int, body: Any) -> Answer:
    def answer(sim: Simulator, call: Call) -> tuple[int, Any]:
        return status, body

    return answer


def cancelled(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, {"cancelledCount": 0}


def job_started(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 202, {"jobId": sim.ids.next()}


def job_result(sim: Simulator, call: Call) -> tuple[int, Any]:
    url = f"https://storage.example/exports/{call.param('jobId')}.csv"
    return 200, {"status": "succeeded", "data": [url], "expires": sim.clock.iso(3600)}


def chat_details(sim: Simulator, call: Call) -> tuple[int, Any]:
    step = {
        "umid": call.param("umid"),
        "subAccountId": call.sub,
        "channel": "WhatsApp",
        "channelId": "00000000-0000-0000-0000-000000000000",
        "direction": "Outbound",
        "status": {"state": "delivered", "timestamp": sim.clock.iso()},
        "contentType": "Text",
        "createdAt": sim.clock.iso(),
        "step": 1,
    }
    return 200, {"data": [step]}


def sms_details(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, {
        "umid": call.param("umid"),
        "subAccountId": call.sub,
        "direction": "outbound",
        "country": "SG",
        "status": {"state": "delivered", "timestamp": sim.clock.iso()},
        "msisdn": "+6591234567",
        "source": "ACME",
        "body": "hello",
        "encoding": "GSM7",
        "createdAt": sim.clock.iso(),
        "smsCount": 1,
        "price": {"total": 0.01, "perSms": 0.01, "currency": "EUR"},
    }


def file_upload(sim: Simulator, call: Call) -> tuple[int, Any]:
    if call.request.content_type != "multipart/form-data" or b'name="file"' not in call.raw:
        raise ApiError(INVALID_PARAMETER, "Invalid parameter: file is required")
    return 201, {"fileName": f"{sim.ids.next_hex()}.bin", "token": sim.ids.next_hex()}


def file_download(sim: Simulator, call: Call) -> web.Response:
    location = f"https://storage.example/files/{call.param('filename')}"
    return web.Response(status=302, headers={"Location": location})


def templates(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, {"templates": sim.templates.get(call.account or "", call.param("channel"))}


def flow(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, {
        "flowId": call.param("flowId"),
        "name": "flow",
        "status": "DRAFT",
        "categories": ["OTHER"],
        "validationErrors": [],
    }


def flow_saved(sim: Simulator, call: Call) -> tuple[int, Any]:
    flow = call.request.match_info.get("flowId") or sim.ids.next_hex()
    return 200, {"id": flow, "success": True, "validationErrors": []}


def flow_preview(sim: Simulator, call: Call) -> tuple[int, Any]:
    url = f"https://business.facebook.com/wa/manage/flows/{call.param('flowId')}/preview/"
    return 200, {"id": call.param("flowId"), "preview_url": url, "expires_at": sim.clock.iso(86400)}


def call_permissions(sim: Simulator, call: Call) -> tuple[int, Any]:
    if not call.request.query.get("destination"):
        raise ApiError(INVALID_PARAMETER, "Invalid parameter: destination is required")
    return 200, {"status": "not_granted", "actions": [], "expirationTime": sim.clock.iso()}


def webhooks(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, [{"subAccountId": "acme_main", "url": "https://example.com/hook", "enabled": True}]


def usage(sim: Simulator, call: Call) -> tuple[int, Any]:
    period = call.request.query.get("billingPeriod", "")
    if not shapes.BILLING_PERIOD.fullmatch(period):
        raise ApiError(INVALID_PARAMETER, "Invalid parameter: billingPeriod")
    return 200, {"data": [], "meta": {"billingPeriod": period}}


def prices(sim: Simulator, call: Call) -> tuple[int, Any]:
    price = {"country": "SG", "mcc": 525, "mnc": 1, "price": 0.01, "currency": "EUR"}
    return 200, {"subAccounts": [{"subAccountId": "acme_main", "prices": [price]}]}


def session(sim: Simulator, call: Call) -> tuple[int, Any]:
    found = sim.sessions.get(call.param("sessionId"))
    if found is None:
        raise ApiError(NOT_FOUND, "Session not found", 404)
    code = call.request.query.get("code")
    if code is not None and not 3 <= len(code) <= 10:
        raise ApiError(INVALID_PARAMETER, "Invalid parameter: code")
    return 200, {**found, "status": "VERIFIED" if code else found["status"]}


def _query_int(call: Call, name: str, default: int | None = None) -> int:
    value = call.request.query.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value or "")
    except ValueError:
        raise ApiError(INVALID_PARAMETER, f"Invalid parameter: {name}") from None


def contacts(sim: Simulator, call: Call) -> tuple[int, Any]:
    limit, offset = _query_int(call, "limit", 100), _query_int(call, "offset", 0)
    return 200, sim.contacts.search_contacts(call.account or "", limit, offset)


def create_contact(sim: Simulator, call: Call) -> tuple[int, Any]:
    return sim.contacts.create_contact(call.account or "", call.body)


def blacklist(sim: Simulator, call: Call) -> tuple[int, Any]:
    sim.contacts.blacklist(call.account or "", call.param("msisdn"))
    return 200, None


def contact(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, sim.contacts.contact(call.account or "", call.param("contactId"))


def delete_contact(sim: Simulator, call: Call) -> tuple[int, Any]:
    sim.contacts.delete_contact(call.account or "", call.param("contactId"))
    return 204, None


def patch_contact(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, sim.contacts.patch_contact(call.account or "", call.param("contactId"), call.body)


def search_groups(sim: Simulator, call: Call) -> tuple[int, Any]:
    limit, offset = _query_int(call, "limit", 100), _query_int(call, "offset", 0)
    found = sim.contacts.search_groups(
        call.account or "", call.request.query.get("name"), limit, offset
    )
    return 200, found


def create_group(sim: Simulator, call: Call) -> tuple[int, Any]:
    return sim.contacts.create_group(call.account or "", call.body)


def group(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, sim.contacts.group(call.account or "", call.param("groupId"))


def delete_group(sim: Simulator, call: Call) -> tuple[int, Any]:
    sim.contacts.delete_group(call.account or "", call.param("groupId"))
    return 204, None


def patch_group(sim: Simulator, call: Call) -> tuple[int, Any]:
    return 200, sim.contacts.patch_group(call.account or "", call.param("groupId"), call.body)


def add_to_group(sim: Simulator, call: Call) -> tuple[int, Any]:
    try:
        group = int(call.param("groupId"))
    except ValueError:
        raise ApiError(NOT_FOUND, "Unable to find group", 404) from None
    return sim.contacts.add_to_group(call.account or "", group, call.body or {"contacts": []})


def remove_from_group(sim: Simulator, call: Call) -> tuple[int, Any]:
    ids = (call.body or {}).get("contacts") or []
    return 200, sim.contacts.remove_from_group(call.account or "", call.param("groupId"), ids)


def batch_job(kind: str, *, upload: bool = False, moves: bool = False) -> Answer:
    def answer(sim: Simulator, call: Call) -> tuple[int, Any]:
        if upload and (
            call.request.content_type != "multipart/form-data" or b'name="file"' not in call.raw
        ):
            raise ApiError(INVALID_PARAMETER, "Invalid parameter: file is required")
        if moves:
            _query_int(call, "from")
            _query_int(call, "to")
        job = {"id": sim.ids.next(), "type": kind, "status": "queued", "createdAt": sim.clock.iso()}
        sim.jobs[job["id"]] = job
        return 202, job

    return answer


def batches(sim: Simulator, call: Call) -> tuple[int, Any]:
    limit, offset = _query_int(call, "limit", 100), _query_int(call, "offset", 0)
    jobs = list(sim.jobs.values())
    return 200, page(jobs, len(jobs), limit, offset)


def batch(sim: Simulator, call: Call) -> tuple[int, Any]:
    found = sim.jobs.get(call.param("batchId"))
    if found is None:
        raise ApiError(NOT_FOUND, "Batch not found", 404)
    return 200, found


def unknown(sim: Simulator, call: Call) -> tuple[int, Any]:
    raise ApiError(NOT_FOUND, "Not found", 404)
