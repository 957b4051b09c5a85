"""The profiles the R4 specification itself defines (vitalsigns, bodytemp, bp..., SimpleQuantity, MoneyQuantity),
without a database: ``data/r4_profiles.json``, written by ``scripts/r4_data.py --only r4_profiles.json`` from the
specification's definitions, their snapshots whole and their documentation left out.

``core_profile`` is a ``resolve`` for ``profiles.profile_issues``, or the last resort of one.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson


@cache
def _profiles() -> dict[str, dict[str, Any]]:
    # Loaded at the first look-up, not at import: 2 MB the server needs only once a profile is asked for.
    return orjson.loads(resources.files("fhir_server.validation").joinpath("data/r4_profiles.json").read_bytes())


def core_profile(url: str) -> dict[str, Any] | None:
    """The core profile with this canonical URL (a ``|version`` is ignored: the file holds R4's, 4.0.1), or None.

    The same dict on every call: callers must not change it.
    """
    return _profiles().get(url.split("|", 1)[0])
