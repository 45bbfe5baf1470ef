"""The bf16 tip: only on CPUs where bf16 was measured faster (Intel AMX), never on AMD, never for tiny jobs, not on
every run."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from featurestore.encoders import runtime as _run_plan  # the tips read cpu_flags from the public package
from pipelines.cli import _tips, cli

DAY = 24 * 3600.0
BIG = {"rows_written": 20_000, "seconds": 90.0, "provenance": {"device": "cpu", "precision": "fp32", "backend": "onnx"}}


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """Pretend to be a CPU: ``machine(vendor, *flags)``; the tip's marker lives in a fresh cache folder."""
    monkeypatch.setenv("FEATURESTORE_CACHE_DIR", str(tmp_path / "cache"))

    def set_cpu(vendor, *flags):
        monkeypatch.setattr(_tips, "cpu_vendor", lambda: vendor)
        monkeypatch.setattr(_run_plan, "cpu_flags", lambda: frozenset(flags))
    return set_cpu


@pytest.mark.parametrize("vendor, flags, shown", [
    ("GenuineIntel", ("avx512f", "amx_bf16", "avx512_bf16"), True),   # measured: ~2x faster
    ("AuthenticAMD", ("avx512f", "avx512_bf16"), False),              # measured slower: 14.0 s vs 9.8 s
    ("AuthenticAMD", ("avx512f", "avx512_bf16", "amx_bf16"), False),  # never on AMD, whatever it reports
    ("GenuineIntel", ("avx512f", "avx512_bf16"), False),              # AVX512-BF16 alone: never measured
    ("", ("bf16", "asimd"), False),                                    # aarch64: never measured
    ("GenuineIntel", ("avx2",), False),                                # no bf16 units
])
def test_only_where_bf16_was_measured_faster(machine, vendor, flags, shown):
    machine(vendor, *flags)
    assert (_tips.bf16_tip([BIG], now=1e9) is not None) is shown


@pytest.mark.parametrize("result", [
    {**BIG, "rows_written": 100, "seconds": 10.0},                     # tiny: 100 rows
    {**BIG, "rows_written": 50_000, "seconds": 5.0},                   # fast enough already
    {**BIG, "provenance": {**BIG["provenance"], "precision": "bf16"}},  # already bf16
    {**BIG, "provenance": {**BIG["provenance"], "device": "cuda"}},
    {**BIG, "provenance": {**BIG["provenance"], "backend": "onnx-int8"}},  # --precision does not apply
])
def test_never_for_tiny_jobs_or_where_it_does_not_apply(machine, result):
    machine("GenuineIntel", "amx_bf16")
    assert _tips.bf16_tip([result], now=1e9) is None


def test_at_most_once_a_week(machine):
    machine("GenuineIntel", "amx_bf16")
    assert _tips.bf16_tip([BIG], now=1e9)
    assert _tips.bf16_tip([BIG], now=1e9 + 60) is None
    assert _tips.bf16_tip([BIG], now=1e9 + 6 * DAY) is None
    assert _tips.bf16_tip([BIG], now=1e9 + 8 * DAY)


def test_the_cli_prints_the_tip_on_stderr_unless_quiet_json_or_precision_chosen(monkeypatch, tmp_path):
    monkeypatch.setattr(_tips, "bf16_tip", lambda results: "tip: try bf16")
    src = tmp_path / "t.csv"
    pd.DataFrame({"id": range(3), "text": ["a", "b", "c"]}).to_csv(src, index=False)
    runner = CliRunner()

    def stderr(*extra):
        result = runner.invoke(cli, ["embed", "-s", str(tmp_path / "s"), "--source", str(src), "-e", "hash:4",
                                     "--name", "h", *extra])
        assert result.exit_code == 0, result.output
        return result.stderr

    assert "tip: try bf16" in stderr()
    assert "tip:" not in stderr("-q")
    assert "tip:" not in stderr("--json")
    assert "tip:" not in stderr("--precision", "fp32")
