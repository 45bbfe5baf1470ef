"""The public surface: every exported name exists; importing stackers pulls in no heavy or upper-layer modules."""

from __future__ import annotations

import stackers


def test_all_names_exist():
    assert stackers.__all__ == sorted(stackers.__all__)
    for name in stackers.__all__:
        assert hasattr(stackers, name), name


def test_import_is_light_and_respects_layers(run_python):
    code = (
        "import sys, stackers\n"
        "heavy = [m for m in ('torch', 'lightgbm', 'matplotlib', 'pipelines') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    run_python(code)
