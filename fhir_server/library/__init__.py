"""The measures library: instrument folders (questionnaires/<id>/), terminology files and content packs,
discovered from disk and kept in step with the database."""

from fhir_server.library.discover import Instrument, Library, discover
from fhir_server.library.errors import LoadError

__all__ = ["Instrument", "Library", "LoadError", "discover"]
