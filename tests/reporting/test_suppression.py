"""Small-cell suppression of the supervision page (fhir_server/supervision/cells.py): a cell under the minimum of
distinct clients shows nothing but that it is small, and a lone small cell takes its smallest sibling with it
(complementary suppression), since the overall less the shown siblings would give it back."""

from __future__ import annotations

from fhir_server.supervision.cells import Cell, complement, read_cell

POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"


def stratum(clients: int, numerator: int, denominator: int) -> dict:
    return {
        "extension": [{"url": "http://fit-fhir.org/fhir/StructureDefinition/measurereport-clients",
                       "valueInteger": clients}],
        "population": [{"code": {"coding": [{"system": POPULATION, "code": c}]}, "count": n}
                       for c, n in (("denominator", denominator), ("numerator", numerator))],
        "measureScore": {"value": numerator / denominator},
    }  # fmt: skip


def cells(*clients: int) -> dict[str, Cell]:
    return {f"k{i}": read_cell(f"k{i}", stratum(n, 1, 4), proportion=True, minimum=5) for i, n in enumerate(clients)}


def test_a_small_cell_keeps_only_that_it_is_small():
    small = read_cell("x", stratum(4, 3, 10), proportion=True, minimum=5)
    assert small.suppressed and (small.score, small.numerator, small.n, small.low) == (None, None, None, None)
    shown = read_cell("x", stratum(5, 3, 10), proportion=True, minimum=5)
    assert not shown.suppressed and (shown.score, shown.numerator, shown.n) == (0.3, 3, 10)
    assert not read_cell("x", stratum(0, 0, 1), proportion=True, minimum=5).suppressed  # empty, not small


def test_a_lone_small_cell_takes_its_smallest_sibling_with_it():
    found = complement(cells(3, 9, 6, 12))
    assert [k for k, c in found.items() if c.suppressed] == ["k0", "k2"]
    assert found["k2"].score is None and found["k1"].score == 0.25
    assert [k for k, c in complement(cells(3, 4, 9)).items() if c.suppressed] == ["k0", "k1"]  # two: enough
    assert not any(c.suppressed for c in complement(cells(6, 9)).values())  # none small: nothing to hide
    assert [k for k, c in complement(cells(3)).items() if c.suppressed] == ["k0"]  # no sibling to hide it with
