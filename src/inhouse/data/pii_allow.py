"""Values that stay: a company's own public contact details are not personal data.

A support answer that ends "write to helpdesk@acme.com or call +1 800 555 0100"
loses what it teaches when both become placeholders. `--pii-allow` names what
may stay, in three forms (docs/pii.md):

- an exact value, compared the way the kind is written differently: e-mails
  case-insensitively, phones as E.164 (`+1 800 555 0100` = `(800) 555-0100`),
  IPs in canonical form, cards, IBANs and SSNs without separators;
- `@acme.com`: any e-mail at exactly that domain; `@*.acme.com`: any e-mail at
  a subdomain (support.acme.com, eu.support.acme.com), not acme.com itself;
  `evil-acme.com` and `acme.com.evil.io` never match either;
- `re:PATTERN`: a Python regular expression searched in the value as found
  (`re:^\\+1 800`), whatever its kind.

Kept free of heavy imports (phonenumbers is loaded on first use) so the
prepare options can check entries when the command line is parsed.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from inhouse.errors import InvalidInputError

# A domain after '@': labels of letters, digits and hyphens, at least one dot.
_DOMAIN = re.compile(r"(?:\*\.)?(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}", re.UNICODE)
# Regions tried for a phone written without '+' or '00', as the detector does.
_PHONE_REGIONS = ("US", "GB")


@dataclass(frozen=True)
class Allowlist:
    """Parsed `--pii-allow` entries; `allows(kind, text)` names the entry that lets a value stay."""

    entries: tuple[str, ...] = ()
    _exact: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)
    _domains: tuple[tuple[str, str, bool], ...] = field(default=(), repr=False, compare=False)
    _patterns: tuple[tuple[str, re.Pattern[str]], ...] = field(default=(), repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, kind: str, text: str) -> str | None:
        """The first entry matching this finding, or None when it must be redacted."""
        exact = self._exact.get(kind, {}).get(value_key(kind, text))
        if exact is not None:
            return exact
        if kind == "EMAIL" and (domain := _email_domain(text)):
            hit = next((entry for entry, d, subs in self._domains if _under(domain, d, subs)), None)
            if hit is not None:
                return hit
        return next((entry for entry, pattern in self._patterns if pattern.search(text)), None)


def parse_allow(entries: Iterable[str] | None, flag: str = "--pii-allow") -> Allowlist:
    """Check and compile the entries once; a bad one is an error naming the flag."""
    from inhouse.data.prepare_config import PII_KINDS

    raw = tuple(e.strip() for e in entries or () if e and e.strip())
    exact: dict[str, dict[str, str]] = {kind: {} for kind in PII_KINDS}
    domains, patterns = [], []
    for entry in raw:
        if entry.startswith("re:"):
            patterns.append((entry, _compile(entry, flag)))
        elif entry.startswith("@"):
            domains.append((entry, *_domain_entry(entry, flag)))
        else:
            for kind in PII_KINDS:
                if key := value_key(kind, entry):
                    exact[kind].setdefault(key, entry)
    return Allowlist(raw, exact, tuple(domains), tuple(patterns))


def check_allow(entries: list[str]) -> list[str]:
    """For a config validator: the entries unchanged, or ValueError with the one-line reason."""
    try:
        parse_allow(entries)
    except InvalidInputError as e:
        raise ValueError(str(e)) from None
    return entries


def _compile(entry: str, flag: str) -> re.Pattern[str]:
    if not entry[3:]:
        raise InvalidInputError(f"{flag} {entry!r}: give a pattern after 're:'")
    try:
        return re.compile(entry[3:])
    except re.error as e:
        raise InvalidInputError(f"{flag} {entry!r}: not a regular expression ({e})") from None


def _domain_entry(entry: str, flag: str) -> tuple[str, bool]:
    """(domain, subdomains only) of '@acme.com' or '@*.acme.com'."""
    domain = _fold(entry[1:]).rstrip(".")
    if not _DOMAIN.fullmatch(domain):
        raise InvalidInputError(f"{flag} {entry!r}: a domain entry is @example.com or @*.example.com")
    return (domain[2:], True) if domain.startswith("*.") else (domain, False)


def _under(domain: str, allowed: str, subdomains: bool) -> bool:
    """Label-wise: 'evil-acme.com' is not under 'acme.com', 'support.acme.com' is."""
    return domain.endswith("." + allowed) if subdomains else domain == allowed


def _email_domain(text: str) -> str:
    return _fold(text).rpartition("@")[2].rstrip(".")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


def value_key(kind: str, text: str) -> str:
    """What two spellings of the same value share; '' when `text` cannot be one of this kind."""
    if kind == "EMAIL":
        return _fold(text) if "@" in text else ""
    if kind == "PHONE":
        return _phone_key(text)
    if kind == "IP":
        return _ip_key(text)
    if kind in ("CARD", "IBAN", "SSN"):
        return re.sub(r"[\s.-]", "", text).upper()
    return text.strip()


def _ip_key(text: str) -> str:
    try:
        return ipaddress.ip_address(text.strip().strip("[]")).compressed
    except ValueError:
        return ""


def _phone_key(text: str) -> str:
    """E.164 when the number parses ('00' read as '+'; national numbers as US, then UK), else ''."""
    import phonenumbers

    digits = re.sub(r"\D", "", text)
    if len(digits) < 7 or re.search(r"[^\d\s().+/-]", text):
        return ""
    written = "+" + digits[2:] if text.strip().lstrip("(").startswith("00") else text
    for region in (None, *_PHONE_REGIONS):
        try:
            number = phonenumbers.parse(written, region)
        except phonenumbers.NumberParseException:
            continue
        if region is None or phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return ""
