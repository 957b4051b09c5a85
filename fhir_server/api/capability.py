"""The CapabilityStatement, generated from what is implemented: the served types, the interactions the
routers provide, and every search parameter in the registry."""

from __future__ import annotations

from typing import Any

from fhir_server import FHIR_VERSION, __version__, models
from fhir_server.operations import OPERATIONS
from fhir_server.search.registry import Registry
from fhir_server.store.records import instant, utc_now

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


def capability_statement(registry: Registry, base_url: str, auth_base: str | None = None) -> dict[str, Any]:
    resources = []
    for resource_type in sorted(models.R4_RESOURCE_TYPES):
        all_params = registry.for_type(resource_type)
        params = [
            {"name": p.code, "definition": p.url, "type": p.type} if p.url else {"name": p.code, "type": p.type}
            for p in all_params
            if p.type != "special"
        ]
        references = [f"{resource_type}:{p.code}" for p in all_params if p.type == "reference"]
        operations = [
            {"name": op.name, "definition": op.definition["url"]}
            for op in OPERATIONS.values()
            if resource_type in op.resource_types and op.levels & {"type", "instance"}
        ]
        entry: dict[str, Any] = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchInclude": ["*", *references],
            "searchRevInclude": ["*"],
            "searchParam": params,
        }
        if operations:
            entry["operation"] = operations
        resources.append(entry)
    system_operations = [
        {"name": op.name, "definition": op.definition["url"]} for op in OPERATIONS.values() if "system" in op.levels
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(utc_now()),
        "publisher": "fhir-server project",
        "kind": "instance",
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
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "searchParam": [{"name": name, "type": "special"} for name in RESULT_PARAMETERS],
                # R4 JSON has no empty arrays: the element is left out while no operation is system-level.
                **({"operation": system_operations} if system_operations else {}),
            }
        ],
    }
