"""CodeSystem/$lookup, CodeSystem/$validate-code, ValueSet/$validate-code and ValueSet/$expand (FHIR R4
terminology module), over the server's own code systems."""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.operations.base import HL7, OperationContext, standard
from fhir_server.terminology.service import Terminology


def _required(ctx: OperationContext, name: str) -> str:
    value = ctx.one(name)
    if not value:
        raise FhirError(400, "required", f"Parameter '{name}' is required", expression=[name])
    return value


def _instance(ctx: OperationContext) -> dict[str, Any] | None:
    if ctx.resource_id is None:
        return None
    return fhirjson.loads_stored(ctx.fhir.read(ctx.resource_type or "", ctx.resource_id).content or "{}")


def _coding(ctx: OperationContext) -> tuple[str | None, str, str | None]:
    """(system, code, display) from code/system/display or a posted Coding."""
    body = ctx.body if isinstance(ctx.body, dict) else {}
    for parameter in body.get("parameter", []):
        if parameter.get("name") == "coding" and isinstance(parameter.get("valueCoding"), dict):
            coding = parameter["valueCoding"]
            return coding.get("system"), str(coding.get("code", "")), coding.get("display")
    return ctx.one("system"), _required(ctx, "code"), ctx.one("display")


def lookup(ctx: OperationContext) -> dict[str, Any]:
    system, code, _ = _coding(ctx)
    instance = _instance(ctx)
    url = instance["url"] if instance else system
    if not url:
        raise FhirError(400, "required", "Parameter 'system' is required", expression=["system"])
    return Terminology(ctx.fhir).lookup(url, code, ctx.one("version"))


def validate_code(ctx: OperationContext) -> dict[str, Any]:
    terminology = Terminology(ctx.fhir)
    system, code, display = _coding(ctx)
    instance = _instance(ctx)
    if ctx.resource_type == "CodeSystem":
        url = instance["url"] if instance else (ctx.one("url") or system)
        if not url:
            raise FhirError(400, "required", "Parameter 'url' is required", expression=["url"])
        return terminology.validate_in_system(url, code, display)
    value_set = instance or terminology.value_set(_required(ctx, "url"), ctx.one("valueSetVersion"))
    return terminology.validate_in_value_set(value_set, system, code, display)


def expand(ctx: OperationContext) -> dict[str, Any]:
    terminology = Terminology(ctx.fhir)
    value_set = _instance(ctx) or terminology.value_set(_required(ctx, "url"), ctx.one("valueSetVersion"))
    count, offset = ctx.one("count"), ctx.one("offset")
    for name, raw in (("count", count), ("offset", offset)):
        if raw is not None and not raw.isdigit():
            raise FhirError(400, "value", f"'{name}' must be a non-negative integer", expression=[name])
    return terminology.expand(
        value_set, text_filter=ctx.one("filter"), count=int(count) if count else None, offset=int(offset or 0)
    )


_OVER_OURS = "over the CodeSystems and ValueSets stored on this server; others answer 404"
LOOKUP = standard(
    "lookup",
    lookup,
    canonicals={"*": f"{HL7}/CodeSystem-lookup"},
    resources=["CodeSystem"],
    levels={"type", "instance"},
    documentation=f"`code` with `system` (and `version`), or `coding`; also on a stored CodeSystem; {_OVER_OURS}.",
)
VALIDATE_CODE = standard(
    "validate-code",
    validate_code,
    canonicals={
        "CodeSystem": f"{HL7}/CodeSystem-validate-code",
        "ValueSet": f"{HL7}/ValueSet-validate-code",
    },
    resources=["CodeSystem", "ValueSet"],
    levels={"type", "instance"},
    documentation=f"`url` (and `valueSetVersion`), `code` with `system` and `display`, or `coding`; {_OVER_OURS}.",
)
EXPAND = standard(
    "expand",
    expand,
    canonicals={"*": f"{HL7}/ValueSet-expand"},
    resources=["ValueSet"],
    levels={"type", "instance"},
    documentation=f"`url` (and `valueSetVersion`), `filter`, `count`, `offset`; {_OVER_OURS}.",
)
