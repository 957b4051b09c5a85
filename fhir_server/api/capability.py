"""The CapabilityStatement, generated from what is implemented: the served types (less those the server refuses to
store, engine/admission.py), the interactions the routers provide, every search parameter in the registry and the
operation registry.  ``tests/api/test_capability_contract.py`` sends a request for everything it declares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_server import FHIR_VERSION, __version__, models
from fhir_server.engine.admission import NOT_ACCEPTED
from fhir_server.operations import OPERATIONS, Operation
from fhir_server.search.registry import Registry
from fhir_server.store.records import instant, utc_now
from fhir_server.subscriptions.checks import PROFILE as SUBSCRIPTION_PROFILE
from fhir_server.subscriptions.topics import topics
from fhir_server.validation.sdc_task import SDC_TASK_PROFILE

TYPE_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
SYSTEM_INTERACTIONS = ["transaction", "batch", "history-system"]
RESULT_PARAMETERS = ["_count", "_total", "_summary", "_elements", "_sort", "_include", "_revinclude"]
# Only what the server meets in full.  SDC Form Response Manager: create, read, update and search
# QuestionnaireResponses (its SHALLs; delete and history too).  Bulk Data Access 2.0 (STU2): $export at system,
# Patient and Group level (operations/export.py), Group read and search.  Subscriptions Backport STU 1.1 (R4
# server): Subscription with the backport profile, rest-hook, the topics declared below, $status and $events.  SMART
# App Launch publishes no server CapabilityStatement: it is declared in rest.security below.
INSTANTIATES = [
    "http://hl7.org/fhir/uv/sdc/CapabilityStatement/sdc-form-response-manager",
    "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data|2.0.0",
    "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4",
]
# R4 has no SubscriptionTopic resource: the backport has servers name each topic's canonical on the Subscription
# resource entry with this extension (the topics themselves are data: subscriptions/topics.json).
TOPIC_CANONICAL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
)
SERVED_TYPES = sorted(t for t in models.R4_RESOURCE_TYPES if t not in NOT_ACCEPTED)
BINARY_DOCUMENTATION = (
    "Read answers the content itself with its contentType unless FHIR is asked for (an `Accept` of "
    "application/fhir+json, or `_format`); create and update take raw content of any other Content-Type, "
    "`X-Security-Context` naming its securityContext."
)

# Checked by validation/sdc_task.py (SDC publishes sdc-task as a differential only; the checks are written out).
TASK_DOCUMENTATION = (
    "A Task with code complete-questionnaire (SDC temp), or claiming the sdc-task profile, follows SDC's "
    "questionnaire-task pattern (sdc-t1: one questionnaire input naming a Questionnaire this server holds, no focus; "
    "authoredOn and requester), is for a Patient, and its fit-task-input inputs (delivery, language, write-back) are "
    "checked; the response that answers it completes it. A patient-context token reaches only Tasks whose every "
    "patient reference (for, owner, requester, focus) is its patient."
)

SUBSCRIPTION_DOCUMENTATION = (
    "Topic-based (Subscriptions Backport STU 1.1): criteria is one of the topic canonicals of this entry's "
    "extensions, filters in _criteria's backport-filter-criteria; rest-hook to https (http on loopback only); "
    "payload content empty, id-only or full-resource; created with status requested, active after the handshake. "
    "A subscriber receives only resources its creator's token could read."
)


def security(authorize_base: str) -> dict[str, Any]:
    """SMART App Launch: the service is SMART-on-FHIR, and (for older clients) the oauth-uris extension; the full
    description is /.well-known/smart-configuration."""
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see /.well-known/smart-configuration)",
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": name, "valueUri": f"{authorize_base}/{path}"}
                    for name, path in (
                        ("authorize", "authorize"),
                        ("token", "token"),
                        ("introspect", "introspect"),
                        ("revoke", "revoke"),
                    )
                ],
            }
        ],
        "description": "Every request except GET /metadata needs a bearer token from this server's authorization "
        "server or a configured EHR's; scopes follow SMART App Launch v1 and v2.",
    }


def _operations(resource_type: str | None, operations: Mapping[str, Operation]) -> list[dict[str, Any]]:
    """The operations routed for the type (None: at system level), each naming its OperationDefinition."""
    if resource_type is None:
        routed = [op for op in operations.values() if "system" in op.levels]
    else:
        routed = [op for op in operations.values() if resource_type in op.resources and op.levels - {"system"}]
    return [
        {"name": op.name, "definition": op.canonical(resource_type), "documentation": op.documentation} for op in routed
    ]


def _resource(registry: Registry, resource_type: str, operations: Mapping[str, Operation]) -> dict[str, Any]:
    all_params = registry.for_type(resource_type)
    params = [
        {"name": p.code, "definition": p.url, "type": p.type} if p.url else {"name": p.code, "type": p.type}
        for p in all_params
        if p.type != "special"  # Location's near is not implemented
    ]
    entry: dict[str, Any] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",  # If-Match is honoured (412 when stale)
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",  # If-Modified-Since and If-None-Match answer 304
        "conditionalUpdate": True,
        "conditionalDelete": "single",  # several matches answer 412
        "searchInclude": ["*", *(f"{resource_type}:{p.code}" for p in all_params if p.type == "reference")],
        "searchRevInclude": ["*"],
        "searchParam": params,
    }
    if resource_type == "Binary":
        entry["documentation"] = BINARY_DOCUMENTATION
    if resource_type == "Task":
        entry["supportedProfile"] = [SDC_TASK_PROFILE]
        entry["documentation"] = TASK_DOCUMENTATION
    if resource_type == "Subscription":
        entry["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": url} for url in sorted(topics())]
        entry["supportedProfile"] = [SUBSCRIPTION_PROFILE]
        entry["documentation"] = SUBSCRIPTION_DOCUMENTATION
    declared = _operations(resource_type, operations)
    if declared:
        entry["operation"] = declared
    return entry


def capability_statement(
    registry: Registry,
    base_url: str,
    auth_base: str | None = None,
    operations: Mapping[str, Operation] = OPERATIONS,
) -> dict[str, Any]:
    """The statement for this server at ``base_url``; ``auth_base`` (the authorization server) when tokens are
    required; ``operations``: those this server's settings declare (operations.declared)."""
    system_operations = _operations(None, operations)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(utc_now()),
        "publisher": "fhir-server project",
        "kind": "instance",
        "instantiates": INSTANTIATES,
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {
            "description": "FHIR server for feedback-informed treatment measures",
            "url": base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                **({"security": security(auth_base)} if auth_base else {}),
                "resource": [_resource(registry, resource_type, operations) for resource_type in SERVED_TYPES],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "searchParam": [{"name": name, "type": "special"} for name in RESULT_PARAMETERS],
                # R4 JSON has no empty arrays: the element is left out while no operation is system-level.
                **({"operation": system_operations} if system_operations else {}),
            }
        ],
    }
