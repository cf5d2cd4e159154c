"""Account-level data the simulator holds: WhatsApp template lists and Contacts API
state (groups, contacts, the blacklist), shaped as business_messaging_api.json and
contacts_api.json answer them.
"""

from __future__ import annotations

from typing import Any

from .shapes import (
    GROUP_EXISTS,
    INVALID_MSISDN,
    INVALID_PARAMETER,
    MSG_MSISDN,
    NOT_FOUND,
    ApiError,
    Clock,
    digits_of,
    msisdn_ok,
)

ANY = "*"


class Templates:
    """Template lists per (account, channel); `*` stands for any account or channel."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lists: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def put(self, templates: list[dict[str, Any]], account: str, channel: str) -> None:
        now = self._clock.iso()
        self._lists[(account, channel)] = [_template_defaults(t, now) for t in templates]

    def get(self, account: str, channel: str) -> list[dict[str, Any]]:
        for key in ((account, channel), (account, ANY), (ANY, channel), (ANY, ANY)):
            found = self._lists.get(key)
            if found is not None:
                return [{"channelId": channel, **t} for t in found]
        return []

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        return {f"{a}/{c}": lists for (a, c), lists in self._lists.items()}


def _template_defaults(template: dict[str, Any], now: str) -> dict[str, Any]:
    out = dict(template)
    for field, name in (("status", "statusName"), ("category", "categoryName")):
        value = out.get(field)
        if isinstance(value, str) and name not in out:
            out[name] = value.replace("_", " ").capitalize()
    if "language" in out and "languageName" not in out:
        out["languageName"] = out["language"]
    out.setdefault("createdAt", now)
    out.setdefault("updatedAt", now)
    return out


class Book:
    """One account's Contacts API data."""

    def __init__(self) -> None:
        self.groups: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.members: dict[int, set[int]] = {}  # contact id -> group ids
        self.by_msisdn: dict[str, int] = {}
        self.blacklisted: dict[str, None] = {}  # msisdns posted to contacts/blacklist

    def blacklist(self) -> list[str]:
        listed = dict(self.blacklisted)
        black = {gid for gid, group in self.groups.items() if group["isBlacklist"]}
        for cid, groups in self.members.items():
            msisdn = self.contacts[cid]["addresses"].get("msisdn")
            if msisdn and groups & black:
                listed[msisdn] = None
        return list(listed)


class Contacts:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.books: dict[str, Book] = {}
        self._next_group = 8000
        self._next_contact = 41700000

    def book(self, account: str) -> Book:
        found = self.books.get(account)
        if found is None:
            found = self.books[account] = Book()
        return found

    def create_group(self, account: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise ApiError(INVALID_PARAMETER, "Invalid parameter: name")
        book = self.book(account)
        if any(g["name"] == body["name"] for g in book.groups.values()):
            raise ApiError(GROUP_EXISTS, "A group with the same name already exists", 409)
        self._next_group += 1
        group = {
            "id": self._next_group,
            "contacts": 0,
            "createdAt": self._clock.iso(),
            "name": body["name"],
            "description": body.get("description", ""),
            "isBlacklist": bool(body.get("isBlacklist", False)),
        }
        book.groups[group["id"]] = group
        return 201, group

    def search_groups(self, account: str, name: str | None, limit: int, offset: int) -> Any:
        groups = list(self.book(account).groups.values())
        found = [g for g in groups if name is None or name.lower() in g["name"].lower()]
        return page(found, len(groups), limit, offset)

    def create_contact(self, account: str, body: Any) -> tuple[int, dict[str, Any]]:
        addresses = body.get("addresses") if isinstance(body, dict) else None
        if not isinstance(addresses, dict) or not addresses:
            raise ApiError(INVALID_PARAMETER, "Invalid parameter: addresses")
        assert isinstance(body, dict)
        msisdn = addresses.get("msisdn")
        if msisdn is not None and not msisdn_ok(msisdn, body.get("country")):
            raise ApiError(INVALID_MSISDN, MSG_MSISDN)
        book = self.book(account)
        wanted = set()
        for ref in body.get("groups") or []:
            gid = ref.get("id") if isinstance(ref, dict) else None
            if gid not in book.groups:
                raise ApiError(NOT_FOUND, f"Unable to find a group with id {gid}")
            wanted.add(gid)
        cid = book.by_msisdn.get(digits_of(msisdn)) if isinstance(msisdn, str) else None
        status = 200 if cid is not None else 201
        if cid is None:
            self._next_contact += 1
            cid = self._next_contact
            book.contacts[cid] = {"id": cid, "createdAt": self._clock.iso()}
            book.members[cid] = set()
            if isinstance(msisdn, str):
                book.by_msisdn[digits_of(msisdn)] = cid
        contact = book.contacts[cid]
        for key in ("firstName", "lastName", "externalId", "country", "customAttributes"):
            if key in body:
                contact[key] = body[key]
        contact["addresses"] = {**contact.get("addresses", {}), **addresses}
        contact.setdefault("customAttributes", {})
        self._join(book, cid, wanted)
        return status, self._contact(book, cid)

    def add_to_group(self, account: str, gid: int, body: Any) -> tuple[int, dict[str, Any]]:
        book = self.book(account)
        if gid not in book.groups:
            raise ApiError(NOT_FOUND, f"Unable to find group with id {gid}", 404)
        ids = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            raise ApiError(INVALID_PARAMETER, "Invalid parameter: contacts")
        for cid in ids:
            if cid in book.contacts:
                self._join(book, cid, {gid})
        return 201, book.groups[gid]

    def contact(self, account: str, cid: str) -> dict[str, Any]:
        book = self.book(account)
        found = _int(cid)
        if found not in book.contacts:
            raise ApiError(NOT_FOUND, f"Unable to find contact with id {cid}", 404)
        return self._contact(book, found)

    def delete_contact(self, account: str, cid: str) -> None:
        book = self.book(account)
        found = _int(cid)
        if found in book.contacts:
            self._leave(book, found, set(book.members[found]))
            msisdn = book.contacts.pop(found)["addresses"].get("msisdn")
            book.by_msisdn.pop(digits_of(msisdn) if isinstance(msisdn, str) else "", None)
            del book.members[found]

    def patch_contact(self, account: str, cid: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        self.contact(account, cid)  # 404 first
        _apply_patch(self.book(account).contacts[_int(cid)], ops)
        return self.contact(account, cid)

    def group(self, account: str, gid: str) -> dict[str, Any]:
        found = self.book(account).groups.get(_int(gid))
        if found is None:
            raise ApiError(NOT_FOUND, f"Unable to find group with id {gid}", 404)
        return found

    def delete_group(self, account: str, gid: str) -> None:
        book = self.book(account)
        self.group(account, gid)
        found = _int(gid)
        for cid in book.members:
            book.members[cid].discard(found)
        del book.groups[found]

    def patch_group(self, account: str, gid: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        _apply_patch(self.group(account, gid), ops)
        return self.group(account, gid)

    def remove_from_group(self, account: str, gid: str, ids: list[int]) -> dict[str, Any]:
        book = self.book(account)
        group = self.group(account, gid)
        for cid in ids:
            if cid in book.members:
                self._leave(book, cid, {group["id"]})
        return group

    def search_contacts(self, account: str, limit: int, offset: int) -> dict[str, Any]:
        book = self.book(account)
        everyone = [self._contact(book, cid) for cid in book.contacts]
        return page(everyone, len(everyone), limit, offset)

    def blacklist(self, account: str, msisdn: str) -> None:
        if not msisdn_ok(msisdn):
            raise ApiError(INVALID_MSISDN, MSG_MSISDN)
        self.book(account).blacklisted[msisdn] = None

    def as_json(self) -> dict[str, Any]:
        return {
            account: {
                "groups": list(book.groups.values()),
                "contacts": [self._contact(book, cid) for cid in book.contacts],
                "blacklist": book.blacklist(),
            }
            for account, book in self.books.items()
        }

    def clear(self) -> None:
        self.books.clear()

    @staticmethod
    def _join(book: Book, cid: int, groups: set[int]) -> None:
        joined = book.members[cid]
        for gid in groups - joined:
            book.groups[gid]["contacts"] += 1
        joined |= groups

    @staticmethod
    def _leave(book: Book, cid: int, groups: set[int]) -> None:
        joined = book.members[cid]
        for gid in groups & joined:
            book.groups[gid]["contacts"] -= 1
        joined -= groups

    @staticmethod
    def _contact(book: Book, cid: int) -> dict[str, Any]:
        groups = [book.groups[gid] for gid in sorted(book.members[cid])]
        return {**book.contacts[cid], "groups": groups}


def page(found: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """One page of a Contacts API list, in 8x8's paging shape."""
    pages = max(1, -(-len(found) // max(limit, 1)))
    return {
        "items": found[offset : offset + limit],
        "page": offset // max(limit, 1) + 1,
        "totalPages": pages,
        "totalCount": total,
        "totalFiltered": len(found),
        "hasPreviousPage": offset > 0,
        "hasNextPage": offset + limit < len(found),
    }


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


def _apply_patch(record: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """JSON Patch `add`/`replace`/`remove` on top-level and `addresses` fields."""
    for op in ops:
        keys = [k for k in str(op["path"]).split("/") if k]
        target = record
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        if not keys or keys[0] in ("id", "createdAt", "groups"):
            raise ApiError(INVALID_PARAMETER, f"Invalid parameter: path {op['path']}")
        if op["op"] in ("add", "replace"):
            target[keys[-1]] = op.get("value")
        elif op["op"] == "remove":
            target.pop(keys[-1], None)
