"""Languages: the app's message catalogues (``catalogues.py``), the choice of the form's language
(``negotiation.py``).  The Questionnaires' own texts are translated in the Questionnaires (FHIR's ``translation``
extension), read by the library."""

from fhir_server.i18n.catalogues import SOURCE_LANGUAGE, CatalogueError, Catalogues, for_server, shipped
from fhir_server.i18n.negotiation import direction, display_name, negotiate, patient_languages

__all__ = [
    "SOURCE_LANGUAGE",
    "CatalogueError",
    "Catalogues",
    "direction",
    "display_name",
    "for_server",
    "negotiate",
    "patient_languages",
    "shipped",
]
