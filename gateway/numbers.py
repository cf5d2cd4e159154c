"""Phone numbers as 8x8 reads them: one E.164 form per spelling, or none.

INTERFACE.md, "Recipients". Without `country` (or with a leading `+`) a number is the
international number its digits spell when they match 8x8's own pattern
`^\\+{0,1}[1-9]{1}[0-9]{6,14}$`: no phonenumbers call on that path (the hot one). With a
country and no `+` there are two readings, national (phonenumbers' `parse(number,
country)`) and international (the digits as E.164); a possible-number check picks one,
and two different possible readings are ambiguous. Spacing and the punctuation of 8x8's
own examples (`8765 4321`, `+65(876)54321`) are allowed; letters (phonenumbers would turn
vanity letters into digits), extensions (`/x`, `ext`, `#`, `;`) and any other character
are not: 8x8 could read them another way.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

#: 8x8's pattern for an SMS `destination` (sms_api.json), ASCII digits only.
PATTERN = re.compile(r"\+?[1-9][0-9]{6,14}")
_FORMATTED = re.compile(r"\+?[0-9 ()\-.]{1,40}")
_PUNCTUATION = str.maketrans("", "", " ()-.")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
#: 8x8's own documentation writes `uk`; ISO (and phonenumbers) say GB.
_ALIASES = {"UK": "GB"}


class NumberError(ValueError):
    """Not a number 8x8 would read one way; `on_country` when the country is at fault."""

    def __init__(self, message: str, *, on_country: bool = False) -> None:
        super().__init__(message)
        self.on_country = on_country


def e164(raw: str, country: str | None = None) -> str:
    """The E.164 form of `raw` (with `country` as 8x8's default country), or NumberError."""
    if country is not None and country != "" and not _COUNTRY.fullmatch(country):
        raise NumberError("country must be an ISO 3166-1 alpha-2 code", on_country=True)
    if PATTERN.fullmatch(raw) and (not country or raw[0] == "+"):
        return raw if raw[0] == "+" else "+" + raw
    text = raw.strip()
    if not _FORMATTED.fullmatch(text):
        raise NumberError("a phone number holds digits, spaces and ( ) - . only")
    plus = text[0] == "+"
    digits = text.translate(_PUNCTUATION).lstrip("+")
    if plus or not country:
        if not PATTERN.fullmatch(digits):
            raise NumberError("not an international number (a leading 0 needs `country`)")
        return "+" + digits
    return _two_readings(digits, _ALIASES.get(country.upper(), country.upper()))


@lru_cache(maxsize=65_536)
def _two_readings(digits: str, region: str) -> str:
    national = _possible(digits, region)
    international = _possible("+" + digits, None) if PATTERN.fullmatch(digits) else None
    if national and international and national != international:
        raise NumberError(f"ambiguous: {national} in {region}, or {international}")
    found = national or international
    if found:
        return found
    if PATTERN.fullmatch(digits):
        return "+" + digits
    raise NumberError(f"not a possible number in {region}")


def _possible(text: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    # IS_POSSIBLE only: a length possible only when dialled locally is no E.164 number
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
