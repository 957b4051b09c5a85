"""FhirError → OperationOutcome: the one place where failures become HTTP answers.

Every error the server gives is an OperationOutcome with an ``issue.code`` from the R4 IssueType value set.
Unexpected exceptions become a 500 with a request id and no stack trace; database outages become 503.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("fhir_server.errors")

FHIR_JSON = "application/fhir+json"


@dataclass
class Issue:
    code: str
    diagnostics: str
    severity: str = "error"
    expression: list[str] = field(default_factory=list)
    rule: str = ""  # the validator's rule family (validation/families.py); never sent to clients

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = self.expression
        return out


class FhirError(Exception):
    """A failure the client should see as an OperationOutcome with the given HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        *,
        expression: list[str] | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issues = issues or [Issue(code, diagnostics, expression=expression or [])]
        self.headers = headers or {}

    @property
    def code(self) -> str:
        return self.issues[0].code

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def info_outcome(message: str, code: str = "informational") -> dict[str, Any]:
    return operation_outcome([Issue(code, message, severity="information")])


# Shorthands for the common answers, so call sites read like the specification's tables.
def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, "not-found", diagnostics)


def gone(diagnostics: str) -> FhirError:
    return FhirError(410, "deleted", diagnostics)


def precondition_failed(diagnostics: str, code: str = "conflict") -> FhirError:
    return FhirError(412, code, diagnostics)


def service_unavailable(diagnostics: str, code: str = "transient", retry_after: int = 1) -> FhirError:
    return FhirError(503, code, diagnostics, headers={"Retry-After": str(retry_after)})
