"""The compliance snapshot: each worker's own copy of every configured account's opt-outs,
consent and templates, so that deciding without Redis (`on_failure = "local"`) still
refuses opted-out numbers, sends without consent and paused templates.

`Compliance` is what the fallback decision reads (`SnapshotStore`, a MemoryStore whose
`gcra.View` compliance answers come from it). Its base (`Snapshot`) is reloaded in full by
gateway/store/refresh.py, built aside and swapped in in one assignment. Changes this process
makes (webhooks, admin API) go into an overlay at once and win over the base; the overlay
lives until the first load that began after them has been swapped in.

Compact: numbers are E.164 digits as integers in one `array('Q')` per account, split into
partitions by residue (about `_PART` numbers each), each partition sorted: a lookup is a
modulo and a `bisect` in ~256 numbers, each partition sorts without holding the event loop
(one sort of a million would hold it ~0.5 s), and 1,000,000 opt-outs cost 8 MB. Consent
keeps a parallel array of category bitmasks (bit i = the i-th category name seen).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from array import array
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.store.memory import MemoryStore

# Redis's OTP bookings are copied from the change stream for as long as they can refuse a
# send (until their TAT). The copy is swept of the expired ones each time it has doubled
# since the last sweep, and not below this size: it holds at most
# max(_OTP_SWEEP_MIN, 2 x the bookings alive at the last sweep), at O(1) amortised a booking.
_OTP_SWEEP_MIN = 1_024
BATCH = 10_000  # numbers sorted between two returns to the event loop (and per SCAN call)
_PART = 256  # numbers per partition, on average
TemplateState = tuple[str, str | None]  # (status, category), as gcra.View answers


def _now_us() -> int:
    return time.time_ns() // 1000


def number(msisdn: str | bytes) -> int | None:
    """An E.164 number's digits as an integer; None for anything else (kept as text)."""
    digits: str | bytes
    if isinstance(msisdn, bytes):
        if msisdn[:1] != b"+" or msisdn[1:2] == b"0":
            return None
        digits = msisdn[1:]
    else:
        if msisdn[:1] != "+" or msisdn[1:2] == "0" or not msisdn.isascii():
            return None
        digits = msisdn[1:]
    return int(digits) if 0 < len(digits) <= 19 and digits.isdigit() else None


class NumberIndex:
    """A set of numbers, each with an optional 64-bit value, in two flat arrays."""

    __slots__ = ("keys", "offsets", "parts", "values")

    def __init__(self, keys: array[int], values: array[int] | None, offsets: array[int]) -> None:
        self.keys, self.values, self.offsets = keys, values, offsets
        self.parts = len(offsets) - 1

    def find(self, n: int) -> int:
        """The position of `n`, or -1."""
        p = n % self.parts
        lo, hi = self.offsets[p], self.offsets[p + 1]
        i = bisect.bisect_left(self.keys, n, lo, hi)
        return i if i < hi and self.keys[i] == n else -1

    def __len__(self) -> int:
        return len(self.keys)

    def nbytes(self) -> int:
        return sum(a.__sizeof__() for a in (self.keys, self.values, self.offsets) if a is not None)


EMPTY = NumberIndex(array("Q"), array("Q"), array("Q", [0, 0]))


class IndexBuilder:
    """Collects numbers (unsorted, duplicates allowed, as SCAN returns them) into their
    partitions; `build` sorts each partition into the final arrays."""

    def __init__(self, expected: int, with_values: bool = False) -> None:
        self.parts = max(1, expected // _PART)
        self._keys = [array("Q") for _ in range(self.parts)]
        self._values = [array("Q") for _ in range(self.parts)] if with_values else None

    def add(self, n: int, value: int = 0) -> None:
        p = n % self.parts
        self._keys[p].append(n)
        if self._values is not None:
            self._values[p].append(value)

    async def build(self) -> NumberIndex:
        total = sum(map(len, self._keys))
        out = _zeros(total)
        vals = _zeros(total) if self._values is not None else None
        offsets = _zeros(self.parts + 1)
        pos = since = 0
        for p in range(self.parts):
            offsets[p] = pos
            part, self._keys[p] = self._keys[p], array("Q")
            if self._values is None or vals is None:
                run = sorted(set(part))
            else:
                pairs = sorted(dict(zip(part, self._values[p], strict=True)).items())
                self._values[p] = array("Q")
                run = [k for k, _ in pairs]
                vals[pos : pos + len(run)] = array("Q", [v for _, v in pairs])
            out[pos : pos + len(run)] = array("Q", run)
            pos += len(run)
            since += len(part)
            if since >= BATCH:  # let requests run between stretches of sorting
                since = 0
                await asyncio.sleep(0)
        offsets[self.parts] = pos
        if pos < total:  # SCAN returned some twice: trim (a copy of exactly the right size)
            out = out[:pos]
            vals = vals[:pos] if vals is not None else None
        return NumberIndex(out, vals, offsets)


def _zeros(n: int) -> array[int]:
    return array("Q", [0]) * n  # allocated exactly (array("Q", bytes(...)) keeps slack)


@dataclass(frozen=True, slots=True)
class AccountData:
    optouts: NumberIndex = EMPTY
    optout_text: frozenset[str] = frozenset()  # members that are not E.164 digits
    consents: NumberIndex = EMPTY  # values: category bitmasks
    consent_text: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the rest
    templates: dict[str, TemplateState] = field(default_factory=dict)  # "name:language"

    def nbytes(self) -> int:
        small = (self.optout_text, self.consent_text, self.templates)
        return self.optouts.nbytes() + self.consents.nbytes() + sum(map(_sizeof, small))


def _sizeof(obj: Collection[Any]) -> int:
    size: int = obj.__sizeof__() + sum(x.__sizeof__() for x in obj) * 2  # keys and values
    return size


@dataclass(frozen=True, slots=True)
class Snapshot:
    accounts: dict[str, AccountData]
    categories: tuple[str, ...]  # bit i of a consent mask is categories[i]
    taken_at: float  # time.monotonic() when the load began: the data is at least this new

    def counts(self) -> dict[str, int]:
        """Records per kind, over every account."""
        accounts = self.accounts.values()
        return {
            "optouts": sum(len(a.optouts) + len(a.optout_text) for a in accounts),
            "consents": sum(len(a.consents) + len(a.consent_text) for a in accounts),
            "templates": sum(len(a.templates) for a in accounts),
        }


@dataclass(slots=True)
class Overlay:
    """Changes made through this process since a load began; None: deleted."""

    optouts: dict[tuple[str, str], bool] = field(default_factory=dict)
    consents: dict[tuple[str, str], tuple[str, ...] | None] = field(default_factory=dict)
    templates: dict[tuple[str, str], TemplateState | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.optouts) + len(self.consents) + len(self.templates)


class Compliance:
    """The snapshot this worker decides on when Redis is gone (a `gcra.View`'s compliance
    half), and the overlay of its own changes."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.base: Snapshot | None = None
        self.overlay = Overlay()
        # Redis's recent OTP bookings, from the change stream: bucket key -> TAT (µs)
        self.otp: dict[str, int] = {}
        self._otp_sweep_at = _OTP_SWEEP_MIN
        self._clock = clock or _now_us
        self.synced_at: float | None = None  # monotonic: the change stream's last read
        self.tailing = asyncio.Event()  # set once the change stream's positions are taken
        self._pending: Overlay | None = None  # changes since the running load began
        self._masks: dict[int, tuple[str, ...]] = {}
        self.nbytes = 0  # the base's size, roughly
        self.accounts: frozenset[str] = frozenset()
        self.accounts_changed = asyncio.Event()

    def covers(self, account: str) -> bool:
        """Whether the decision may trust this snapshot for `account`."""
        return self.base is not None and account in self.base.accounts

    def opted_out(self, account: str, msisdn: str) -> bool:
        found = self.overlay.optouts.get((account, msisdn))
        if found is not None:
            return found
        data = self.base.accounts.get(account) if self.base is not None else None
        if data is None:
            return False
        n = number(msisdn)
        return data.optouts.find(n) >= 0 if n is not None else msisdn in data.optout_text

    def consent_categories(self, account: str, msisdn: str) -> tuple[str, ...] | None:
        key = (account, msisdn)
        if key in self.overlay.consents:
            return self.overlay.consents[key]
        data = self.base.accounts.get(account) if self.base is not None else None
        if data is None:
            return None
        n = number(msisdn)
        i = data.consents.find(n) if n is not None else -1
        if i < 0 or data.consents.values is None:
            return data.consent_text.get(msisdn)
        return self._names(data.consents.values[i])

    def template_state(self, account: str, template: str) -> TemplateState | None:
        key = (account, template.lower())
        if key in self.overlay.templates:
            return self.overlay.templates[key]
        data = self.base.accounts.get(account) if self.base is not None else None
        return None if data is None else data.templates.get(template)

    def _names(self, mask: int) -> tuple[str, ...]:
        names = self._masks.get(mask)
        if names is None and self.base is not None:
            cats = self.base.categories
            names = self._masks[mask] = tuple(c for i, c in enumerate(cats) if mask >> i & 1)
        return names or ()

    # --- changes made through this process
    def note_optout(self, account: str, msisdn: str, present: bool) -> None:
        self._note(lambda o: o.optouts.__setitem__((account, msisdn), present))

    def note_consent(self, account: str, msisdn: str, categories: Iterable[str] | None) -> None:
        cats = None if categories is None else tuple(c.upper() for c in categories)
        self._note(lambda o: o.consents.__setitem__((account, msisdn), cats))

    def note_template(self, account: str, template: str, state: TemplateState | None) -> None:
        key = (account, template.lower())  # one template whatever the case (keys.template_id)
        self._note(lambda o: o.templates.__setitem__(key, state))

    def note_otp(self, key: str, tat: int) -> None:
        """An OTP bucket booked in Redis (its key and TAT, µs on Redis's clock)."""
        if tat > self.otp.get(key, 0):
            self.otp[key] = tat
        if len(self.otp) >= self._otp_sweep_at:
            now = self._clock()
            self.otp = {k: v for k, v in self.otp.items() if v > now}
            self._otp_sweep_at = max(_OTP_SWEEP_MIN, 2 * len(self.otp))

    def otp_tat(self, key: str) -> int:
        return self.otp.get(key, 0)

    def merge_template(
        self, account: str, template: str, status: str | None, category: str | None
    ) -> None:
        """A template event's fields over what this snapshot knows (as templatesync's merge
        does over the stored record); an event without a status for an unknown template
        changes nothing."""
        known = self.template_state(account, template)
        if known is not None:
            self.note_template(account, template, (status or known[0], category or known[1]))
        elif status is not None:
            self.note_template(account, template, (status, category))

    def _note(self, change: Callable[[Overlay], None]) -> None:
        change(self.overlay)
        if self._pending is not None:
            change(self._pending)

    # --- loading (gateway/store/refresh.py)
    def want(self, accounts: frozenset[str]) -> None:
        """The accounts to keep (from the config); new ones wake the refresher."""
        if not accounts <= self.accounts:
            self.accounts_changed.set()
        self.accounts = accounts

    def begin(self) -> None:
        """A load begins: changes from now on must outlive its swap."""
        self._pending = Overlay()

    def abandon(self) -> None:
        self._pending = None

    def install(self, snap: Snapshot) -> None:
        """Swap a finished load in; the overlay keeps what changed while it ran."""
        self.base, self.overlay, self._pending = snap, self._pending or Overlay(), None
        self._masks = {}
        self.nbytes = sum(a.nbytes() for a in snap.accounts.values())

    def stats(self) -> dict[str, Any]:
        """What /readyz shows: age and size of the base, and the overlay's length."""
        snap = self.base
        counts = snap.counts() if snap else dict.fromkeys(("optouts", "consents", "templates"), 0)
        age = None if snap is None else round(time.monotonic() - snap.taken_at, 3)
        synced = self.synced_at
        behind = None if synced is None else round(time.monotonic() - synced, 3)
        return {"loaded": snap is not None, "age_s": age, **counts,
                "changes": len(self.overlay), "bytes": self.nbytes,
                "synced_s": behind, "otp": len(self.otp)}  # fmt: skip


class SnapshotStore(MemoryStore):
    """The fallback's in-process store: its own buckets, compliance from the snapshot."""

    def __init__(self, compliance: Compliance) -> None:
        super().__init__()
        self.compliance = compliance

    def opted_out(self, account: str, msisdn: str) -> bool:
        return self.compliance.opted_out(account, msisdn)

    def consent_categories(self, account: str, msisdn: str) -> tuple[str, ...] | None:
        return self.compliance.consent_categories(account, msisdn)

    def template_state(self, account: str, template: str) -> TemplateState | None:
        return self.compliance.template_state(account, template)

    def tat(self, key: str, now: int) -> int:
        """A bucket's TAT here, or Redis's for an OTP bucket it booked later (so a local
        decision knows the OTPs sent through Redis before it stopped answering)."""
        return max(super().tat(key, now), self.compliance.otp_tat(key))
