"""Every operation of 8x8's chat-apps, SMS, Verify and Contacts APIs the simulator answers:
8x8's own path under a product prefix, the body schema 8x8 enforces (`specs`) and the
function that builds 8x8's documented answer (`answers`).
"""

from __future__ import annotations

from . import answers as a
from . import specs
from .app import Answer, Route
from .schema import Spec

_SUB = "/api/v1/subaccounts/{sub}"
_ACCT = "/api/v1/accounts/{account}"
_CHANNEL = f"{_ACCT}/channels/{{channel}}"
_WA = "/api/v1/whatsapp/subaccounts/{sub}/channels/{channel}"


# --- the table -----------------------------------------------------------------------------


def _route(
    method: str,
    product: str,
    path: str,
    kind: str,
    answer: Answer,
    spec: Spec | None = None,
    *,
    optional: bool = False,
) -> Route:
    return Route(
        method,
        f"/{product}{path}",
        product,
        kind,
        answer,
        per_subaccount="{sub}" in path,
        spec=spec,
        body_optional=optional,
    )


def _chatapps() -> list[Route]:
    c = "chatapps"
    return [
        _route("POST", c, f"{_SUB}/messages", "send", a.chat_one),
        _route("POST", c, f"{_SUB}/messages/batch", "batch", a.chat_batch),
        _route("POST", c, f"{_SUB}/lon", "lon", a.lon_one),
        _route("POST", c, f"{_SUB}/lon/batch", "lon_batch", a.lon_batch),
        _route("POST", c, f"{_SUB}/events", "events", a.empty(200), specs.EVENT),
        _route("POST", c, f"{_SUB}/messages/{{umid}}/read", "messages.read", a.empty(200)),
        _route("GET", c, f"{_SUB}/messages/{{umid}}", "messages.get", a.chat_details),
        _route("DELETE", c, f"{_SUB}/messages/{{umid}}", "messages.cancel", a.cancelled),
        _route("DELETE", c, f"{_SUB}/messages/batch/{{batchId}}", "batch.cancel", a.cancelled),
        _route("POST", c, f"{_SUB}/messages/exports", "exports.start", a.job_started, specs.EXPORT),
        _route("GET", c, f"{_SUB}/messages/exports/{{jobId}}", "exports.get", a.job_result),
        _route("DELETE", c, f"{_SUB}/messages/exports/{{jobId}}", "exports.cancel", a.empty(204)),
        _route("POST", c, f"{_SUB}/files", "files.upload", a.file_upload),
        _route("GET", c, "/files/{filename}", "files.download", a.file_download),
        _route("GET", c, f"{_CHANNEL}/templates", "templates.list", a.templates),
        _route(
            "POST", c, f"{_CHANNEL}/templates", "templates.create", a.fixed(200, {}), specs.TEMPLATE
        ),
        _route(
            "DELETE",
            c,
            f"{_CHANNEL}/templates/{{templateName}}",
            "templates.delete",
            a.fixed(200, {}),
        ),
        _route("GET", c, f"{_CHANNEL}/flows", "flows.list", a.fixed(200, {"flows": []})),
        _route("POST", c, f"{_CHANNEL}/flows", "flows.create", a.flow_saved, specs.FLOW_CREATE),
        _route("GET", c, f"{_CHANNEL}/flows/{{flowId}}", "flows.get", a.flow),
        _route(
            "PUT",
            c,
            f"{_CHANNEL}/flows/{{flowId}}",
            "flows.update",
            a.flow_saved,
            specs.FLOW_UPDATE,
        ),
        _route("DELETE", c, f"{_CHANNEL}/flows/{{flowId}}", "flows.delete", a.empty(200)),
        _route("GET", c, f"{_CHANNEL}/flows/{{flowId}}/preview", "flows.preview", a.flow_preview),
        _route("POST", c, f"{_CHANNEL}/flows/{{flowId}}/publish", "flows.publish", a.empty(200)),
        _route(
            "POST", c, f"{_CHANNEL}/flows/{{flowId}}/deprecate", "flows.deprecate", a.empty(200)
        ),
        _route("GET", c, f"{_WA}/callPermissions", "call_permissions", a.call_permissions),
        _route(
            "POST",
            c,
            f"{_WA}/directSend/sample",
            "direct_send.sample",
            a.fixed(200, {"success": True, "category": "UTILITY"}),
            specs.DIRECT_SEND_SAMPLE,
        ),
        _route("GET", c, f"{_ACCT}/webhooks", "webhooks.list", a.webhooks),
        _route(
            "POST", c, f"{_ACCT}/webhooks", "webhooks.add", a.empty(200), specs.CHAT_WEBHOOKS_ADD
        ),
        _route(
            "DELETE",
            c,
            f"{_ACCT}/webhooks",
            "webhooks.delete",
            a.empty(200),
            specs.CHAT_WEBHOOKS_DELETE,
        ),
        _route("GET", c, f"{_ACCT}/usage/messages", "usage", a.usage),
    ]


def _sms() -> list[Route]:
    s = "sms"
    survey = f"{_SUB}/surveys/{{surveyId}}/messages"
    return [
        _route("POST", s, f"{_SUB}/messages", "send", a.sms_one),
        _route("POST", s, f"{_SUB}/messages/batch", "batch", a.sms_batch),
        _route("POST", s, survey, "survey", a.survey_one, specs.SURVEY_MESSAGE),
        _route("POST", s, f"{survey}/batch", "survey_batch", a.survey_batch, specs.SURVEY_BATCH),
        _route("GET", s, f"{_SUB}/messages/{{umid}}", "messages.get", a.sms_details),
        _route("DELETE", s, f"{_SUB}/messages/{{umid}}", "messages.cancel", a.cancelled),
        _route("DELETE", s, f"{_SUB}/messages/batch/{{batchId}}", "batch.cancel", a.cancelled),
        _route(
            "POST",
            s,
            f"{_SUB}/messages/{{umid}}/feedback",
            "feedback",
            a.empty(200),
            specs.FEEDBACK,
        ),
        _route("DELETE", s, f"{_SUB}/messages/{{umid}}/pii", "pii.delete", a.empty(202)),
        _route("POST", s, f"{_SUB}/messages/exports", "exports.start", a.job_started, specs.EXPORT),
        _route("GET", s, f"{_SUB}/messages/exports/{{jobId}}", "exports.get", a.job_result),
        _route("DELETE", s, f"{_SUB}/messages/exports/{{jobId}}", "exports.cancel", a.empty(204)),
        _route("GET", s, f"{_ACCT}/prices", "prices", a.prices),
        _route(
            "GET",
            s,
            f"{_ACCT}/balance",
            "balance",
            a.fixed(200, {"balance": 100.0, "currency": "EUR"}),
        ),
        _route("GET", s, f"{_ACCT}/webhooks", "webhooks.list", a.webhooks),
        _route(
            "POST", s, f"{_ACCT}/webhooks", "webhooks.add", a.empty(200), specs.SMS_WEBHOOKS_ADD
        ),
        _route(
            "DELETE",
            s,
            f"{_ACCT}/webhooks",
            "webhooks.delete",
            a.empty(200),
            specs.SMS_WEBHOOKS_DELETE,
        ),
    ]


def _verify_routes() -> list[Route]:
    v, base = "verify", "/api/v2/subaccounts/{sub}"
    return [
        _route("POST", v, f"{base}/sessions", "verify", a.verify),
        _route("GET", v, f"{base}/sessions/{{sessionId}}", "sessions.validate", a.session),
        _route(
            "POST",
            v,
            f"{base}/sma/coverage",
            "sma.coverage",
            a.fixed(200, {"isAvailable": False}),
            specs.SMA_COVERAGE,
        ),
    ]


def _contacts_routes() -> list[Route]:
    k = "contacts"
    return [
        _route("GET", k, f"{_ACCT}/contacts", "contacts.search", a.contacts),
        _route("POST", k, f"{_ACCT}/contacts", "contacts.create", a.create_contact, specs.CONTACT),
        _route(
            "POST", k, f"{_ACCT}/contacts/blacklist/{{msisdn}}", "contacts.blacklist", a.blacklist
        ),
        _route("GET", k, f"{_ACCT}/contacts/{{contactId}}", "contacts.get", a.contact),
        _route("DELETE", k, f"{_ACCT}/contacts/{{contactId}}", "contacts.delete", a.delete_contact),
        _route(
            "PATCH",
            k,
            f"{_ACCT}/contacts/{{contactId}}",
            "contacts.update",
            a.patch_contact,
            specs.PATCH,
        ),
        _route("GET", k, f"{_ACCT}/groups", "groups.search", a.search_groups),
        _route("POST", k, f"{_ACCT}/groups", "groups.create", a.create_group, specs.GROUP),
        _route("GET", k, f"{_ACCT}/groups/{{groupId}}", "groups.get", a.group),
        _route("DELETE", k, f"{_ACCT}/groups/{{groupId}}", "groups.delete", a.delete_group),
        _route(
            "PATCH", k, f"{_ACCT}/groups/{{groupId}}", "groups.update", a.patch_group, specs.PATCH
        ),
        _route(
            "POST",
            k,
            f"{_ACCT}/groups/{{groupId}}/contacts",
            "groups.add_contacts",
            a.add_to_group,
            specs.GROUP_CONTACTS,
            optional=True,
        ),
        _route(
            "DELETE",
            k,
            f"{_ACCT}/groups/{{groupId}}/contacts",
            "groups.remove_contacts",
            a.remove_from_group,
            specs.GROUP_CONTACTS,
            optional=True,
        ),
        _route(
            "POST",
            k,
            f"{_ACCT}/contacts/batches/createContacts",
            "batches.create_contacts",
            a.batch_job("createContacts", upload=True),
        ),
        _route(
            "POST",
            k,
            f"{_ACCT}/contacts/batches/deleteContacts",
            "batches.delete_contacts",
            a.batch_job("deleteContacts"),
            specs.DELETE_CONTACTS,
        ),
        _route(
            "POST",
            k,
            f"{_ACCT}/groups/batches/copyContacts",
            "batches.copy_contacts",
            a.batch_job("copyContacts", moves=True),
        ),
        _route(
            "POST",
            k,
            f"{_ACCT}/groups/batches/moveContacts",
            "batches.move_contacts",
            a.batch_job("moveContacts", moves=True),
        ),
        _route(
            "POST",
            k,
            f"{_ACCT}/groups/batches/deleteGroups",
            "batches.delete_groups",
            a.batch_job("deleteGroups"),
            specs.DELETE_GROUPS,
        ),
        _route("GET", k, f"{_ACCT}/batches", "batches.list", a.batches),
        _route("GET", k, f"{_ACCT}/batches/{{batchId}}", "batches.get", a.batch),
    ]


ROUTES: tuple[Route, ...] = (*_chatapps(), *_sms(), *_verify_routes(), *_contacts_routes())
UNKNOWN = Route("*", "/{tail:.*}", "", "unknown", a.unknown, api=False)
