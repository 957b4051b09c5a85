"""95 % intervals for the supervision page and the MeasureReports: a rate or a mean of a handful of sessions is
shown with how little it says."""

from __future__ import annotations

import math

Z95 = 1.959964


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion: stays inside [0, 1] and honest at 0/n and n/n, where the normal
    approximation claims certainty it does not have."""
    if trials <= 0:
        raise ValueError("a proportion needs at least one trial")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(n: int, total: float, squares: float, z: float = Z95) -> tuple[float, float] | None:
    """Normal interval of a mean from its sums (n, Σx, Σx²); None below two observations."""
    if n < 2:
        return None
    mean = total / n
    variance = max(0.0, (squares - n * mean * mean) / (n - 1))
    half = z * math.sqrt(variance / n)
    return mean - half, mean + half
