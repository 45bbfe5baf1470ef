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


def test_import_without_the_stack_extra_says_which_extra(run_python):
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None  # as if scikit-learn were not installed\n"
        "from featurestore.errors import MissingDependencyError\n"
        "try:\n"
        "    import stackers\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    out = run_python(code).stdout
    assert out.startswith("stackers needs sklearn: pip install 'featurestore[stack]'."), out
