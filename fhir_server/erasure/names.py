"""What an erased patient or resource is called where a record of it is kept: in the audit trail, and in another
person's record that pointed at it (a Group's member, another Patient's ``link``).

A reference ``Patient/123`` becomes ``Patient/erased-<keyed hash>``: the hash of the reference under a key derived
from the server's secret key (store/crypto.py, ``Keyring.pseudonym``), so the trail still says "this one patient
was read on these days, by these users" and can be searched by the pseudonym (``AuditEvent?patient=erased-…``),
while nobody without the key can tell whose it was, and nobody with it can compute the name without knowing the id
already.  Names are computed under the key current at the erasure: the expunge AuditEvent records the key's id.

Rewriting works on the stored JSON text, so nothing else of a version changes (keys, decimals, whitespace); an
AuditEvent's ``entity.query`` (the search's query string, base64) is decoded, renamed and encoded again.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any, Protocol

from fhir_server import fhirjson

PREFIX = "erased-"
_ID = r"[A-Za-z0-9\-.]{1,64}"
_REFERENCE = re.compile(rf"(?<![A-Za-z0-9\-.])([A-Z][A-Za-z]+)/({_ID})(?![A-Za-z0-9\-.])")
# In a query string a reference's slash may be percent-encoded (``subject=Patient%2F123``).
_QUERY_REFERENCE = re.compile(rf"(?<![A-Za-z0-9\-.])([A-Z][A-Za-z]+)(/|%2[Ff])({_ID})(?![A-Za-z0-9\-.])")


class Namer(Protocol):
    current_id: str | None

    def pseudonym(self, value: str) -> str: ...


class Renaming:
    """The references an erasure removes (``Patient/123``, ``Observation/abc``) and their pseudonyms; ``patient``:
    the erased patient's id, which a query string may also carry bare (``patient=123``)."""

    def __init__(self, namer: Namer, erased: Iterable[tuple[str, str]], patient: str | None = None) -> None:
        self.key_id = namer.current_id or ""
        # the patient is renamed even when their Patient lives only in the EHR that launched the app
        named = {*erased, *([("Patient", patient)] if patient else [])}
        self.names = {f"{t}/{i}": f"{t}/{PREFIX}{namer.pseudonym(f'{t}/{i}')}" for t, i in named}
        self.patient = patient
        self._bare = (
            re.compile(rf"(^|[=,|/?&]|%2[CcFf]|%7[Cc])({re.escape(patient)})(?=$|[&,|/?#%])") if patient else None
        )

    def of(self, reference: str) -> str:
        """The pseudonym that stands for ``reference`` (one of the erased)."""
        return self.names[reference]

    @property
    def patient_pseudonym(self) -> str | None:
        return self.names.get(f"Patient/{self.patient}") if self.patient else None

    def text(self, content: str) -> str:
        """Every erased reference in ``content`` replaced by its pseudonym."""
        return _REFERENCE.sub(self._renamed, content)

    def _renamed(self, m: re.Match[str]) -> str:
        # An id may end in dots, and so may a sentence: "read Patient/123." names Patient/123.
        resource_type, resource_id, rest = m[1], m[2], ""
        while f"{resource_type}/{resource_id}" not in self.names and resource_id.endswith("."):
            resource_id, rest = resource_id[:-1], "." + rest
        name = self.names.get(f"{resource_type}/{resource_id}")
        return m[0] if name is None else name + rest

    def query(self, query: str) -> str:
        """A search's query string (or request path) with every erased reference, and the erased patient's bare id
        as a value or path segment, renamed."""
        renamed = _QUERY_REFERENCE.sub(self._query_reference, query)
        if self._bare is not None and self.patient_pseudonym is not None:
            bare = self.patient_pseudonym.partition("/")[2]
            renamed = self._bare.sub(lambda m: m[1] + bare, renamed)
        return renamed

    def _query_reference(self, m: re.Match[str]) -> str:
        name = self.names.get(f"{m[1]}/{m[3]}")
        return m[0] if name is None else f"{m[1]}{m[2]}{name.partition('/')[2]}"

    def stored(self, content: str) -> str:
        """A stored version's JSON text renamed: its references, and an AuditEvent's base64 queries."""
        renamed = self.text(content)
        if '"query":"' not in renamed:
            return renamed
        for old in _queries(fhirjson.loads_stored(renamed)):
            try:
                decoded = base64.b64decode(old, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue  # not a query this server wrote: left as it is
            new = base64.b64encode(self.query(decoded).encode()).decode()
            if new != old:
                renamed = renamed.replace(f'"query":"{old}"', f'"query":"{new}"')
        return renamed


def refers_to(text: str, references: set[str]) -> bool:
    """Whether ``text`` names one of ``references`` (``Patient/123``) as a whole reference, not a longer id."""
    for m in _REFERENCE.finditer(text):
        resource_id = m[2]
        while f"{m[1]}/{resource_id}" not in references and resource_id.endswith("."):
            resource_id = resource_id[:-1]
        if f"{m[1]}/{resource_id}" in references:
            return True
    return False


def json_names_patient(text: str, patient_id: str) -> bool:
    """Whether a JSON document (a grant's launch context) names the patient: as its ``patient``, or by a reference
    anywhere in it."""
    try:
        document = fhirjson.loads_stored(text)
    except ValueError:
        return False
    reference = {f"Patient/{patient_id}"}

    def walk(value: Any, key: str | None) -> bool:
        if isinstance(value, dict):
            return any(walk(v, k) for k, v in value.items())
        if isinstance(value, list):
            return any(walk(v, key) for v in value)
        return isinstance(value, str) and ((key == "patient" and value == patient_id) or refers_to(value, reference))

    return walk(document, None)


def _queries(resource: Any) -> list[str]:
    entities = resource.get("entity") if isinstance(resource, dict) else None
    if not isinstance(entities, list):
        return []
    return [e["query"] for e in entities if isinstance(e, dict) and isinstance(e.get("query"), str)]


def base64_needles(text: str) -> list[str]:
    """Substrings the base64 encoding of any string containing ``text`` must contain, whatever the offset of
    ``text`` in it: one per alignment (0, 1 or 2 bytes before it), the characters made of ``text``'s bits alone.
    An AuditEvent's query that names a patient is found by these with a plain LIKE, then checked decoded.  An empty
    needle (``text`` too short for that alignment to fix a whole character) narrows nothing."""
    data = text.encode()
    needles = []
    for before in range(3):
        encoded = base64.b64encode(b"\0" * before + data).decode()
        start, end = -(-8 * before // 6), 8 * (before + len(data)) // 6
        needles.append(encoded[start:end])
    return needles
