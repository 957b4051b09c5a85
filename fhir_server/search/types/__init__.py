"""One module per search-parameter type.  Each module offers:

- ``TABLE``: the index table kind it fills;
- ``index(values)``: rows for the index table from the values an expression selected;
- ``parse(raw, modifier)``: the Condition one comma-separated search value asks for (raises SearchValueError).
"""

from __future__ import annotations

from types import ModuleType

from fhir_server.search.types import date, number, quantity, reference, string, token, uri
from fhir_server.search.types.common import SearchValueError

MODULES: dict[str, ModuleType] = {
    "token": token,
    "string": string,
    "date": date,
    "reference": reference,
    "quantity": quantity,
    "number": number,
    "uri": uri,
}

__all__ = ["MODULES", "SearchValueError"]
