"""Redis key names. `{...}` is the Redis Cluster hash tag: everything about one 8x8
account shares its tag so one script call covers it; egress-IP and end-user-IP buckets
have tags of their own."""

from __future__ import annotations


def subaccount_bucket(account: str, subaccount: str) -> str:
    return f"gw:{{{account}}}:sub:{subaccount}"


def queue(bucket: str) -> str:
    """A laned bucket's bulk queue (its second TAT, docs/lanes.md): beside the bucket, under
    its hash tag."""
    return f"{bucket}:q"


def fair(bucket: str) -> str:
    """A subaccount bucket's clients (docs/lanes.md, fairness): a ZSET of client name -> its
    fair-share TAT, beside the bucket, under its hash tag."""
    return f"{bucket}:c"


def cooldown(account: str, subaccount: str) -> str:
    return f"gw:{{{account}}}:cool:{subaccount}"


def otp_bucket(account: str, msisdn: str) -> str:
    return f"gw:{{{account}}}:otp:{msisdn}"


def optouts(account: str) -> str:
    return f"gw:{{{account}}}:optout"


def consents(account: str) -> str:
    return f"gw:{{{account}}}:consent"


def templates(account: str) -> str:
    return f"gw:{{{account}}}:tpl"


def egress_bucket(name: str) -> str:
    return f"gw:{{egress:{name}}}:ip"


def end_user_bucket(ip: str) -> str:
    return f"gw:{{eu:{ip}}}:ip"


def optout_changes(account: str) -> str:
    """Hash: opt-out identity -> time of its last change (µs), for ordering STOP/START."""
    return f"gw:{{{account}}}:optout:at"  # kind "optout": kept without TTL like the set


def scheduled(account: str, identity: str) -> str:
    """Sorted set: the scheduled sends to one person (scored by when to forget them)."""
    return f"gw:{{{account}}}:sched:{identity}"


def channel_user_id(channel: str, user_id: str) -> str:
    """The opt-out identity of a chat-apps user known by channel user id (no number):
    `cu:<channel, lowercase>:<channelUserId as 8x8 sends it>`."""
    return f"cu:{channel.strip().lower()}:{user_id}"


def changes(account: str) -> str:
    """The account's stream of compliance changes and OTP bookings (every worker tails it
    into its compliance copy: gateway/store/tail.py)."""
    return f"gw:{{{account}}}:changes"


def decision(decision_id: str) -> str:
    """The journal of one decision's bookings, so a decision that failed or answered late
    can be undone (lua/cancel.lua)."""
    return f"gw:dec:{decision_id}"


def template_id(name: str, language: str) -> str:
    """A template's one key, "name:language", lowercased: Meta keeps names lowercase and
    8x8 does not tell case apart, so every spelling of a name is one template (the store's
    hash field, the snapshot's key, MessageCheck.template)."""
    return f"{name}:{language}".lower()


def erased(account: str) -> str:
    """List: the account's erasure tombstones (a masked number and when), for the export."""
    return f"gw:{{{account}}}:erased"


# --- WhatsApp's own limits (docs/whatsapp.md): every key under the account's hash tag, so
# one decision stays one script call per slot on a Cluster


def wa_sender(account: str, sender: str) -> str:
    """GCRA bucket of one WhatsApp sender number."""
    return f"gw:{{{account}}}:wa:snd:{sender}"


def wa_pair(account: str, sender: str, recipient: str) -> str:
    """GCRA bucket of one (sender number, recipient) pair."""
    return f"gw:{{{account}}}:wa:pair:{sender}:{recipient}"


def wa_window(account: str, recipient: str) -> str:
    """Present (24 h TTL) while the recipient's customer-service window is open."""
    return f"gw:{{{account}}}:wa:win:{recipient}"


def wa_hold(account: str, recipient: str) -> str:
    """Present (TTL) while MARKETING to the recipient is held (131049/1024 receipt)."""
    return f"gw:{{{account}}}:wa:mhold:{recipient}"


def wa_suppressed(account: str, recipient: str) -> str:
    """Present (TTL) while the number is suppressed for WhatsApp (131026/1018 receipt)."""
    return f"gw:{{{account}}}:wa:undel:{recipient}"


def wa_tier(account: str, portfolio: str) -> str:
    """ZSET of a portfolio's counted recipients, scored by their last send (µs). Under the
    hash tag of the account its subaccounts belong to (config requires one account)."""
    return f"gw:{{{account}}}:wa:tier:{portfolio}"


def wa_tier_set(account: str, portfolio: str) -> str:
    """A portfolio's tier learned from 8x8's account webhook (until the config changes)."""
    return f"gw:{{{account}}}:wa:tierset:{portfolio}"
