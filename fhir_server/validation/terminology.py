"""An external terminology server for the codes this server does not hold (``FHIR_SERVER_TERMINOLOGY_URL``):
SNOMED CT, LOINC, mime types... asked with the standard operations (R4 CodeSystem/$validate-code and
ValueSet/$validate-code), through the one outbound HTTP client, answers cached.

Without one, such codes are not judged and ``$validate`` says so in an informational issue.  A code system the
terminology server does not know either (it answers 404) is not judged; a code it knows to be wrong is an error.
An unreachable or failing server never refuses a write: the code is not judged and a warning says why.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fhir_server.outbound import OUTBOUND, Outbound, OutboundError

CACHE_SECONDS = 3600.0
CACHE_ENTRIES = 20_000
# Code systems the specification defines: judged from the R4 tables, never sent out.
LOCAL_PREFIXES = ("http://hl7.org/fhir/", "http://terminology.hl7.org/")


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool | None  # None: not judged (unknown to the terminology server, or it failed)
    message: str = ""
    display: str | None = None  # the display the server gives for the code, when it gives one


class RemoteTerminology:
    def __init__(self, base_url: str, outbound: Outbound = OUTBOUND, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.outbound = outbound
        self.timeout = timeout
        self._cache: OrderedDict[tuple[str, ...], tuple[float, Verdict]] = OrderedDict()
        self._lock = threading.Lock()

    def in_system(self, system: str, code: str) -> Verdict:
        return self._ask(("cs", system, code), "CodeSystem", {"url": system, "code": code})

    def in_value_set(self, value_set: str, system: str | None, code: str) -> Verdict:
        params = {"url": value_set, "code": code, **({"system": system} if system else {})}
        return self._ask(("vs", value_set, system or "", code), "ValueSet", params)

    def _ask(self, key: tuple[str, ...], kind: str, params: dict[str, str]) -> Verdict:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
        verdict = self._call(kind, params)
        if verdict.valid is not None or verdict.message.startswith("unknown"):
            with self._lock:
                self._cache[key] = (now + CACHE_SECONDS, verdict)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return verdict

    def _call(self, kind: str, params: dict[str, str]) -> Verdict:
        url = f"{self.base_url}/{kind}/$validate-code?{urlencode(params)}"
        try:
            status, body = self.outbound.get_json(url, headers={"Accept": "application/fhir+json"},
                                                  timeout=self.timeout)  # fmt: skip
        except OutboundError as exc:
            return Verdict(None, f"the terminology server did not answer ({exc})")
        if status == 404:
            return Verdict(None, f"unknown to the terminology server ({params['url']})")
        if status != 200 or not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            return Verdict(None, f"the terminology server answered {status}")
        values = _parameters(body)
        result = values.get("result")
        if not isinstance(result, bool):
            return Verdict(None, "the terminology server's answer has no result")
        return Verdict(result, str(values.get("message") or ""), values.get("display"))


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for parameter in body.get("parameter") or ():
        if isinstance(parameter, dict):
            value = next((v for k, v in parameter.items() if k.startswith("value")), None)
            out.setdefault(str(parameter.get("name")), value)
    return out


def is_local(system: str) -> bool:
    return system.startswith(LOCAL_PREFIXES)
