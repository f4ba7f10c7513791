"""Personal data in model outputs: detectors with checksums where the format has one, and same-length masking.

Masks keep the byte length (every character of a match becomes `*`), so a masked KServe v2 binary tensor or gRPC
message stays well-formed without rewriting sizes or Content-Length. Candidates that fail their checksum (Luhn for
cards, ISO 7064 mod 97 for IBANs, the SSA's reserved ranges for SSNs) are not personal data and pass untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMAIL = re.compile(rb"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}")
# International (+ and 8-15 digits) or North American (10 digits) with the usual separators.
PHONE = re.compile(rb"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){6,13}"
                   rb"|\(?\b\d{3}\)?[ .-]?\d{3}[ .-]\d{4})\b")
CARD = re.compile(rb"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
IBAN = re.compile(rb"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# National ids: US Social Security numbers and UK National Insurance numbers.
SSN = re.compile(rb"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
NINO = re.compile(rb"\b(?![DFIQUV])[A-Z](?![DFIQUVO])[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    iban = candidate.replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _card(match: bytes) -> bool:
    digits = re.sub(rb"[ -]", b"", match).decode()
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


DETECTORS = {
    "email": (EMAIL, None),
    "card": (CARD, _card),
    "iban": (IBAN, lambda m: iban_ok(m.decode())),
    "national-id": (SSN, None),
    "phone": (PHONE, None),
}
NATIONAL_ID_EXTRA = (NINO,)


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


def find(text: bytes, detectors: tuple[str, ...]) -> list[Finding]:
    """Every personal-data match in `text` by the enabled detectors; checksummed kinds are checked first, so a
    valid card number is reported as a card, not as a phone number."""
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    order = [k for k in ("card", "iban", "national-id", "email", "phone") if k in detectors]
    for kind in order:
        pattern, check = DETECTORS[kind]
        patterns = (pattern,) + (NATIONAL_ID_EXTRA if kind == "national-id" else ())
        for pat in patterns:
            for m in pat.finditer(text):
                if check is not None and not check(m.group()):
                    continue
                if any(m.start() < e and s < m.end() for s, e in taken):
                    continue
                taken.append((m.start(), m.end()))
                found.append(Finding(kind, m.start(), m.end()))
    return sorted(found, key=lambda f: f.start)


def mask(text: bytes, findings: list[Finding]) -> bytes:
    out = bytearray(text)
    for f in findings:
        out[f.start:f.end] = b"*" * (f.end - f.start)
    return bytes(out)
