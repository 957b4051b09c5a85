"""The only import point for fhir.resources.

fhir.resources ships R4B (4.3.0) models and no plain R4; the server declares FHIR 4.0.1.  This module is where the
difference is handled: the served resource types are the R4 types that R4B still models (R4B dropped the
MedicinalProduct* family, the Substance* detail types and the two EvidenceSynthesis types, and added a handful of
its own that R4 clients would not know).
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel

# FHIR R4 (4.0.1) resource types that the R4B models can validate.
R4_RESOURCE_TYPES: frozenset[str] = frozenset(
    [
        "Account",
        "ActivityDefinition",
        "AdverseEvent",
        "AllergyIntolerance",
        "Appointment",
        "AppointmentResponse",
        "AuditEvent",
        "Basic",
        "Binary",
        "BiologicallyDerivedProduct",
        "BodyStructure",
        "Bundle",
        "CapabilityStatement",
        "CarePlan",
        "CareTeam",
        "CatalogEntry",
        "ChargeItem",
        "ChargeItemDefinition",
        "Claim",
        "ClaimResponse",
        "ClinicalImpression",
        "CodeSystem",
        "Communication",
        "CommunicationRequest",
        "CompartmentDefinition",
        "Composition",
        "ConceptMap",
        "Condition",
        "Consent",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "DetectedIssue",
        "Device",
        "DeviceDefinition",
        "DeviceMetric",
        "DeviceRequest",
        "DeviceUseStatement",
        "DiagnosticReport",
        "DocumentManifest",
        "DocumentReference",
        "Encounter",
        "Endpoint",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "EpisodeOfCare",
        "EventDefinition",
        "Evidence",
        "EvidenceVariable",
        "ExampleScenario",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "GraphDefinition",
        "Group",
        "GuidanceResponse",
        "HealthcareService",
        "ImagingStudy",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "ImplementationGuide",
        "InsurancePlan",
        "Invoice",
        "Library",
        "Linkage",
        "List",
        "Location",
        "Measure",
        "MeasureReport",
        "Media",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationKnowledge",
        "MedicationRequest",
        "MedicationStatement",
        "MessageDefinition",
        "MessageHeader",
        "MolecularSequence",
        "NamingSystem",
        "NutritionOrder",
        "Observation",
        "ObservationDefinition",
        "OperationDefinition",
        "OperationOutcome",
        "Organization",
        "OrganizationAffiliation",
        "Parameters",
        "Patient",
        "PaymentNotice",
        "PaymentReconciliation",
        "Person",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "Provenance",
        "Questionnaire",
        "QuestionnaireResponse",
        "RelatedPerson",
        "RequestGroup",
        "ResearchDefinition",
        "ResearchElementDefinition",
        "ResearchStudy",
        "ResearchSubject",
        "RiskAssessment",
        "Schedule",
        "SearchParameter",
        "ServiceRequest",
        "Slot",
        "Specimen",
        "SpecimenDefinition",
        "StructureDefinition",
        "StructureMap",
        "Subscription",
        "Substance",
        "SupplyDelivery",
        "SupplyRequest",
        "Task",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
        "VerificationResult",
        "VisionPrescription",
    ]
)


# FHIR R4 resource types that R4B no longer models: not served here, but a reference may still name one.
R4_TYPES_NOT_MODELLED: frozenset[str] = frozenset(
    [
        "EffectEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "RiskEvidenceSynthesis",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
    ]
)


def is_resource_type(name: str) -> bool:
    return name in R4_RESOURCE_TYPES


def is_r4_type(name: str) -> bool:
    """Any FHIR R4 resource type, served here or not (what a reference may name)."""
    return name in R4_RESOURCE_TYPES or name in R4_TYPES_NOT_MODELLED


@cache
def model_class(name: str) -> type[FHIRAbstractModel]:
    """The R4B model class for a resource or datatype name (raises ValueError for unknown names)."""
    return get_fhir_model_class(name)


def element_model(annotation: Any) -> type | None:
    """The FHIR model class inside a field annotation (Optional[List[abc.XType]]), or None for primitives."""
    for arg in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(arg) in (list, typing.Union):
            found = element_model(arg)
            if found is not None:
                return found
        elif hasattr(arg, "get_model_klass"):
            return arg.get_model_klass()
    return None


@cache
def fields_by_key(model: type) -> dict[str, Any]:
    """A model's fields by their JSON key (``class`` for the field ``class_fhir``, ``_gender`` for extensions)."""
    return {(field.alias or name): field for name, field in model.model_fields.items()}
