"""A customer's phone as E.164 (`+573001234567`) when it can be normalised, else as written.

`phonenumbers.parse` accepts almost any text (vanity letters, extensions, RFC 3966 URIs, IDD
prefixes, full-width digits), and that generality is most of its cost: about 15 µs of the 21 µs
a phone took (benchmarks/RESULTS.md, "Issue 16 §2: mapping (session 4)"), every profile sent
paying it. Customer phones are nearly always plain: digits grouped by spaces, dots or dashes,
with or without a leading `+`. For exactly that shape, `e164` does what `parse` does (the same
steps of the library, in its order: country code after a `+`, else the default region's; the
national prefix; the possible lengths; the Italian leading zero) without the text handling, checks
validity with the library's patterns, the likeliest first (`_valid`), and formats it as before. Anything else, and any
case where `parse` would take a branch not reproduced here (an IDD prefix, a national number
starting with the region's country code, an unknown country code, a length `parse` refuses), goes
to `phonenumbers.parse` itself. tests/core/test_phones.py compares both on every region's
example numbers and on random plain numbers.

The steps reproduced use private functions of the library (`_maybe_strip_national_prefix_carrier_code`,
`_test_number_length`, `_is_number_matching_desc`): the lock file pins its version, and the test
fails if an upgrade changes them.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, SUPPORTED_REGIONS, PhoneMetadata, PhoneNumber
from phonenumbers import phonenumberutil as _util

from masivo_braze_sync.iso import COUNTRIES

#: the plain shape: ASCII digits, groups split by one space, dot or dash, an optional leading `+`
_PLAIN = re.compile(r" *(\+?)([0-9]+(?:[ .\-][0-9]+)*) *")
_SEPARATORS = str.maketrans("", "", " .-")
_MAX_INPUT = 250  # `parse` refuses longer input (its _MAX_INPUT_STRING_LENGTH)
_MIN_NSN, _MAX_NSN = 2, 17  # `parse`'s bounds on the national significant number
_MAX_COUNTRY_CODE = 3
#: lengths after which `parse` keeps the national number as it was (no national prefix stripped)
_KEEP_UNSTRIPPED = (
    _util.ValidationResult.TOO_SHORT,
    _util.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    _util.ValidationResult.INVALID_LENGTH,
)


def _parsed(raw: str, region: str | None) -> str:
    """The general path: `phonenumbers.parse`, whatever `raw` holds."""
    try:
        number = phonenumbers.parse(raw, region if region in COUNTRIES else None)
    except phonenumbers.NumberParseException:
        return raw.strip()
    return _formatted(number, raw)


def _formatted(number: PhoneNumber, raw: str) -> str:
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return raw.strip()


def _country_code(digits: str) -> tuple[int, str]:
    """The leading country calling code of `digits` and the rest (the library's `_extract_country_code`)."""
    if digits[0] == "0":
        return 0, digits
    for n in range(1, min(len(digits), _MAX_COUNTRY_CODE) + 1):
        code = int(digits[:n])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code, digits[n:]
    return 0, digits


#: per default region: its metadata, its IDD prefix pattern, its country code as text; None when
#: the library cannot take numbers without `+` for it (`parse` then refuses them)
_REGIONS: dict[str | None, tuple[PhoneMetadata, re.Pattern | None, str] | None] = {}


def _region(region: str | None) -> tuple[PhoneMetadata, re.Pattern | None, str] | None:
    found = None
    if region in COUNTRIES and region in SUPPORTED_REGIONS:
        metadata = PhoneMetadata.metadata_for_region(region, None)
        idd = metadata.international_prefix
        found = (metadata, None if idd is None else _util.re_compile(idd), str(metadata.country_code))
    _REGIONS[region] = found  # a few hundred regions at most
    return found


def e164(raw: str, region: str | None) -> str:
    """`raw` as E.164 when it is a valid number (`region` for numbers written without `+`), else
    `raw` trimmed. The same result as `phonenumbers.parse` + `is_valid_number` + `format_number`."""
    match = _PLAIN.fullmatch(raw) if len(raw) <= _MAX_INPUT else None
    if match is None:
        return _parsed(raw, region)
    plus, grouped = match.groups()
    digits = grouped.translate(_SEPARATORS)
    if len(digits) < 3:  # `parse`'s viability and IDD length rules differ below 3 digits
        return _parsed(raw, region)
    if plus:
        code, national = _country_code(digits)
        if code == 0:
            return _parsed(raw, region)
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, COUNTRY_CODE_TO_REGION_CODE[code][0])
    else:
        known = _REGIONS.get(region) if region in _REGIONS else _region(region)
        if known is None:
            return _parsed(raw, region)
        metadata, idd, own_code = known
        if (idd is not None and idd.match(digits)) or digits.startswith(own_code):
            return _parsed(raw, region)
        code, national = metadata.country_code, digits
    if metadata is None or len(national) < _MIN_NSN:
        return _parsed(raw, region)
    _, stripped, _ = _util._maybe_strip_national_prefix_carrier_code(national, metadata)
    if _util._test_number_length(stripped, metadata) not in _KEEP_UNSTRIPPED:
        national = stripped
    if not _MIN_NSN <= len(national) <= _MAX_NSN:
        return _parsed(raw, region)
    number = PhoneNumber(country_code=code, national_number=int(national))
    if len(national) > 1 and national[0] == "0":  # the library's Italian leading zero(s)
        number.italian_leading_zero = True
        zeros = 1
        while zeros < len(national) - 1 and national[zeros] == "0":
            zeros += 1
        if zeros != 1:
            number.number_of_leading_zeros = zeros
    if _valid(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return raw.strip()


def _valid(number: PhoneNumber) -> bool:
    """`phonenumbers.is_valid_number`, most likely types first.

    The library finds the number's type, testing eleven patterns in a fixed order (premium rate,
    toll free, ... fixed line, mobile) and calls it valid when one matches (within the general
    pattern). Whether one matches does not depend on the order: testing mobile and fixed line
    first answers for most customer phones after two or three patterns instead of eleven.
    """
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        return False
    code = number.country_code
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region.upper())
    if metadata is None or (
        region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
        and code != phonenumbers.country_code_for_valid_region(region)
    ):
        return False
    nsn = phonenumbers.national_significant_number(number)
    matches = _util._is_number_matching_desc
    if not matches(nsn, metadata.general_desc):
        return False
    if not metadata.same_mobile_and_fixed_line_pattern and matches(nsn, metadata.mobile):
        return True
    return any(
        matches(nsn, desc)
        for desc in (
            metadata.fixed_line, metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
            metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail,
        )
    )  # fmt: skip
