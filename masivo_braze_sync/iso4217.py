"""ISO 4217 alphabetic currency codes Braze accepts as a purchase `currency` (docs/braze.md#purchase-object).

The codes in force in 2025 (List One, including fund, metal and test codes); withdrawn codes
(HRK, SLL, CUC, ZWL, VEF, BYR, MRO, STD, LTL, ...) are not valid; ANG stays until the XCG
changeover completes. The single copy of the list: the emulator (`emulator/validation.py`) imports
`CURRENCIES` from here, so the core and the referee agree by construction.
"""

from __future__ import annotations

_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN
    ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD
    JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA
    XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG
"""
CURRENCIES = frozenset(_CODES.split())


def is_currency(code: object) -> bool:
    """True for an ISO 4217 alphabetic code in force (upper case, as Braze expects it)."""
    return isinstance(code, str) and code in CURRENCIES
