"""Request-body schemas of 8x8's operations, as the simulator enforces them.

Derived (not copied) from 8x8's OpenAPI files, 2026-07: the required properties, JSON types,
enums, patterns and bounds 8x8 checks. A send's per-message rules (a bad number in a batch
rejects that message only) live in `shapes`; these specs cover the rest of each body.
"""

from __future__ import annotations

from .schema import (
    anything,
    array,
    boolean,
    integer,
    msisdn,
    number,
    obj,
    string,
)

ENCODING = string(enum=("AUTO", "GSM7", "UCS2"))
CHAT_TYPES = (
    "text",
    "audio",
    "video",
    "image",
    "location",
    "file",
    "interactive",
    "template",
    "carousel",
    "richCard",
)
FLOW_CATEGORIES = (
    "SIGN_UP",
    "SIGN_IN",
    "APPOINTMENT_BOOKING",
    "LEAD_GENERATION",
    "CONTACT_US",
    "CUSTOMER_SUPPORT",
    "SURVEY",
    "OTHER",
)

# --- chat apps -----------------------------------------------------------------------------

CHAT_USER = obj(
    msisdn=string(),
    country=string(max_length=2),
    lineUserId=string(),
    channelUserId=string(),
)
CHAT_MESSAGE = obj(
    ("user", "type", "content"),
    user=CHAT_USER,
    clientMessageId=string(max_length=50),
    type=string(enum=CHAT_TYPES),
    content=obj(text=string(max_length=35000), fallbackText=string(max_length=35000)),
    scheduled=string(),
    expiry=string(),
    dlrCallbackUrl=string(),
    channels=array(obj(("channel",))),
    context=obj(("umid",), umid=string()),
)
CHAT_BATCH = obj(
    ("messages",),
    clientBatchId=string(max_length=100),
    template=obj(type=string(enum=CHAT_TYPES), content=obj(), dlrCallbackUrl=string()),
    messages=array(anything(), max_items=10000),
    includeMessagesInResponse=boolean(),
)
LON_MESSAGE = obj(
    ("user", "content"),
    user=obj(msisdn=string(), country=string(max_length=2), channelUserId=string()),
    clientMessageId=string(max_length=50),
    content=obj(
        title=string(), company=string(), greeting=string(), explanation=string(), list=array(obj())
    ),
    dlrCallbackUrl=string(),
    smsFallback=obj(text=string(), source=string(max_length=16), encoding=ENCODING),
)
LON_BATCH = obj(
    ("messages",),
    clientBatchId=string(max_length=100),
    messages=array(anything(), max_items=10000),
    includeMessagesInResponse=boolean(),
)
EVENT = obj(
    ("channel", "type", "umid"),
    channel=string(enum=("whatsapp", "rcs")),
    type=string(enum=("typing",)),
    umid=string(),
)
EXPORT = obj(
    **{"from": string(), "to": string()},
    phoneNumber=string(),
    countries=array(string(min_length=2, max_length=2)),
    limit=integer(),
    channelUserId=string(),
)
TEMPLATE = obj(
    ("language", "name", "category", "components"),
    language=string(),
    name=string(),
    category=string(),
    components=array(obj(("type",), type=string())),
    allow_category_change=boolean(),
    message_send_ttl_seconds=integer(),
)
FLOW_FIELDS = {
    "name": string(),
    "categories": array(string(enum=FLOW_CATEGORIES)),
    "publish": boolean(),
    "flowJson": string(),
    "cloneFlowId": string(),
    "endPointUri": string(),
}
FLOW_CREATE = obj(("name", "categories"), **FLOW_FIELDS)
FLOW_UPDATE = obj(applicationId=string(), **FLOW_FIELDS)
DIRECT_SEND_SAMPLE = obj(
    ("type",),
    type=string(enum=("text", "interactive")),
    text=obj(("body",), body=string()),
    interactive=obj(
        ("type", "body", "action"),
        type=string(enum=("cta_url", "button")),
        body=obj(("text",), text=string()),
        action=obj(),
    ),
)
WEBHOOK_TYPES = string(enum=("CADR", "MSG", "CABM"))
CHAT_WEBHOOKS_ADD = array(
    obj(
        ("subAccountId", "url"),
        subAccountId=string(),
        url=string(),
        httpAuthorization=string(),
        enabled=boolean(),
        type=WEBHOOK_TYPES,
        oauth=obj(("url", "clientId", "clientSecret", "credentialsLocation")),
    )
)
CHAT_WEBHOOKS_DELETE = array(obj(("subAccountId",), subAccountId=string(), type=WEBHOOK_TYPES))

# --- SMS -----------------------------------------------------------------------------------

_SMS_COMMON = {
    "source": string(max_length=16),
    "clientMessageId": string(max_length=350),
    "encoding": ENCODING,
    "scheduled": string(),
    "expiry": string(),
    "dlrCallbackUrl": string(),
}
SMS_MESSAGE = obj(
    ("destination", "text"),
    destination=string(),
    country=string(max_length=2),
    text=string(),
    clientIp=string(),
    track=string(enum=("None", "Outcome")),
    **_SMS_COMMON,
)
SMS_BATCH = obj(
    clientBatchId=string(max_length=20),
    messages=array(anything(), max_items=10000),
    destinations=array(anything(), max_items=10000),
    template=obj(
        source=string(max_length=16),
        text=string(),
        encoding=ENCODING,
        scheduled=string(),
        expiry=string(),
        dlrCallbackUrl=string(),
    ),
    includeMessagesInResponse=boolean(),
    clientIp=string(),
)
SURVEY_MESSAGE = obj(
    ("destination",),
    destination=msisdn(),
    country=string(min_length=2, max_length=2),
    templateBody=string(),
    templateVariables=obj(),
    **_SMS_COMMON,
)
SURVEY_BATCH = obj(
    ("messages",),
    clientBatchId=string(max_length=20),
    messages=array(obj(("destination",)), min_items=1, max_items=10000),
    template=obj(
        ("templateBody",),
        templateBody=string(),
        source=string(max_length=16),
        encoding=ENCODING,
        scheduled=string(),
        expiry=string(),
        dlrCallbackUrl=string(),
    ),
    includeMessagesInResponse=boolean(),
)
FEEDBACK = obj(("outcome",), outcome=string(enum=("success", "failure")), timestamp=string())
SMS_WEBHOOKS_ADD = array(
    obj(
        ("subAccountId", "url"),
        subAccountId=string(),
        url=string(),
        httpAuthorization=string(),
        enabled=boolean(),
        oauth=obj(("url", "clientId", "clientSecret", "credentialsLocation")),
    )
)
SMS_WEBHOOKS_DELETE = array(obj(("subAccountId",), subAccountId=string()))

# --- Verify --------------------------------------------------------------------------------

VERIFY_SESSION = obj(
    ("destination",),
    destination=string(),
    country=string(max_length=2),
    channel=string(enum=("sms", "call", "whatsapp", "viber", "sma")),
    brand=string(max_length=30),
    codeLength=integer(3, 10),
    codeValidity=integer(30, 7200),
    codeType=string(
        enum=(
            "NUMERIC",
            "NUMERIC_WITH_DASH",
            "ALPHANUMERIC",
            "ALPHANUMERIC_CAPITALS",
            "ALPHANUMERIC_EASY",
        )
    ),
    template=string(),
    language=string(),
    resetSession=boolean(),
    resendingInterval=integer(10, 7200),
    callbackUrl=string(),
    sms=obj(source=string(), encoding=ENCODING),
    call=obj(
        source=string(),
        speed=number(0.5, 2),
        repetition=integer(1, 3),
        voiceProfile=string(max_length=50),
    ),
    whatsapp=obj(templateName=string()),
    clientIp=string(),
)
SMA_COVERAGE = obj(
    ("clientIp",), clientIp=string(), destination=string(), country=string(max_length=2)
)

# --- Contacts ------------------------------------------------------------------------------

CONTACT = obj(
    ("addresses",),
    firstName=string(min_length=1, max_length=200),
    lastName=string(min_length=1, max_length=200),
    externalId=string(min_length=1, max_length=50),
    country=string(min_length=2, max_length=2),
    groups=array(obj(("id",), id=integer()), min_items=1, max_items=10),
    addresses=obj(
        msisdn=msisdn(),
        weChatUserId=string(max_length=128),
        facebookUserId=string(max_length=128),
        email=string(max_length=320),
        zaloId=string(max_length=128),
        lineId=string(max_length=128),
        kakaoTalkId=string(max_length=128),
    ),
    customAttributes=obj(),
)
PATCH = array(
    obj(
        ("op", "path"),
        op=string(enum=("add", "remove", "replace", "copy", "move", "test")),
        path=string(),
        value=string(min_length=1),
    )
)
GROUP = obj(
    ("name",),
    name=string(min_length=1, max_length=100),
    description=string(min_length=1, max_length=100),
    isBlacklist=boolean(),
)
GROUP_CONTACTS = obj(contacts=array(integer()))
DELETE_CONTACTS = obj(ids=array(integer()), msisdns=array(string()), all=boolean())
DELETE_GROUPS = obj(("ids", "deleteContacts"), ids=array(integer()), deleteContacts=boolean())
