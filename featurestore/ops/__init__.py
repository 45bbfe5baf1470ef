"""Operations on stored versions: consistency checks (``doctor``), drop, diff and drift.

``Store.doctor`` / ``drop`` / ``diff`` / ``drift`` are the entry points; their results are public here.
"""

from featurestore.ops._diff import Diff
from featurestore.ops._doctor import DoctorReport, Finding
from featurestore.ops._drift import DriftResult, DriftSide

__all__ = ["Diff", "DoctorReport", "DriftResult", "DriftSide", "Finding"]
