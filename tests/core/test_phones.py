"""The plain-phone path gives what `phonenumbers.parse` gives, on every region's example numbers
and on random plain numbers (digits grouped by spaces, dots, dashes; with and without `+`)."""

from __future__ import annotations

import functools
import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from masivo_braze_sync.entities.phones import _parsed, e164
from masivo_braze_sync.iso import COUNTRIES

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
DEFAULTS = [None, "CO", "US", "GB", "IT", "BR", "MX", "AR", "DE", "AQ"]


@functools.cache
def _examples() -> list[str]:
    out = []
    for region in REGIONS:
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            for fmt in (PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.E164):
                out.append(phonenumbers.format_number(number, fmt))
            nsn = phonenumbers.national_significant_number(number)
            out += [nsn, nsn[:-1], nsn + "9", f"+{number.country_code} {nsn}", f"{number.country_code}{nsn}"]
    return out


def _grouped(r: random.Random, digits: str) -> str:
    out = digits[0]
    for d in digits[1:]:
        out += r.choice(["", "", "", " ", "-", "."]) + d
    return out


def _random_numbers(n: int) -> list[str]:
    r = random.Random(16)
    codes = [str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE]
    out = []
    for _ in range(n):
        length = r.randint(1, 19)
        digits = "".join(r.choice("0123456789") for _ in range(length))
        start = r.choice(["", "", "0", "00", "011", "1", "3", "9", r.choice(codes)])
        text = _grouped(r, start + digits) if start + digits else "1"
        out.append(r.choice(["", "", "+", " +", "  "]) + text + r.choice(["", "", " "]))
    return out


@pytest.mark.parametrize("region", DEFAULTS)
def test_examples_match_the_library(region: str | None) -> None:
    region = region if region in COUNTRIES else None
    for raw in _examples():
        assert e164(raw, region) == _parsed(raw, region), (raw, region)


def test_random_plain_numbers_match_the_library() -> None:
    r = random.Random(7)
    for raw in _random_numbers(20_000):
        region = r.choice([*REGIONS, None])
        region = region if region in COUNTRIES else None
        assert e164(raw, region) == _parsed(raw, region), (raw, region)


def test_other_shapes_take_the_library_path() -> None:
    wide = "".join(chr(0xFF10 + int(d)) for d in "3001234567")  # full-width digits
    others = ["(650) 253-0000", "+1 650 253 0000 ext. 12", "1-800-FLOWERS", wide, "tel:+1-650-253-0000"]
    for raw in [*others, "  ", "+", "12", "300  123 4567", "9" * 300]:
        for region in ("CO", "US", None):
            assert e164(raw, region) == _parsed(raw, region), (raw, region)
