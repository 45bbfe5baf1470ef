"""Benchmarks stay runnable: each quick mode runs end to end and prints its lines, in seconds, without a model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?\d+\.\d+"


def test_bench_stack_quick_digits():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_stack", "--quick", "--tasks", "digits"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2].startswith("# cpu "), lines[:3]
    assert [line.split()[0] for line in lines[3:]] == ["task", "single", "single", "stack", "goal"], lines
    stack = re.search(rf"sklearn\[LR C=4\] ({NUMBER}) s F1 ({NUMBER})   ours ({NUMBER}) s F1 ({NUMBER}) .*"
                      rf"ours-theirs F1 ({NUMBER}) pts \[({NUMBER}), ({NUMBER})\]   "
                      rf"ours/theirs time ({NUMBER})x", lines[6])
    assert stack, lines[6]
    their_s, their_f1, our_s, our_f1, diff, lo, hi, ratio = map(float, stack.groups())
    # digits halves are easy: both stacks classify well above chance, and the printed figures agree with each other
    assert 0.7 < their_f1 <= 1 and 0.7 < our_f1 <= 1
    assert abs(diff - 100 * (our_f1 - their_f1)) < 0.16 and lo <= diff <= hi  # F1s are printed rounded
    assert our_s > 0 and their_s > 0 and ratio > 0
    goal = re.search(rf"stack-best ({NUMBER}) pts, paired 95% CI \[({NUMBER}), ({NUMBER})\]", lines[7])
    assert goal and float(goal[2]) <= float(goal[1]) <= float(goal[3]), lines[7]


def test_bench_search_quick():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_search", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    ratios = [re.search(rf"(\S+)/(\S+) ({NUMBER})x$", line) for line in lines]
    assert all(ratios) and len(lines) == 6, lines
    assert [m.group(1) for m in ratios] == ["ours", "ours", "faiss-flat", "duckdb-table", "duckdb-parquet", "exact"]
    assert "same top-10 True" in lines[0]
    recall = re.search(rf"recall@10 ({NUMBER}) on 100 queries", lines[5])
    assert recall and float(recall.group(1)) >= 0.9, lines[5]


def test_bench_embed_images_quick():
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "benchmarks.bench_embed_images", "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 5, lines
    hand = re.search(rf"hand loop .* ({NUMBER}) img/s   forward only ({NUMBER}) img/s   hand/forward ({NUMBER})x$",
                     lines[0])
    assert hand, lines[0]
    rate, forward, ratio = map(float, hand.groups())  # timings are the benchmark's to report, never a test's to judge
    assert rate > 0 and forward > 0 and abs(ratio - rate / forward) <= 0.02 * ratio + 0.01, lines[0]  # rounded figures
    cos = re.search(rf"cos to hand loop min ({NUMBER})   ours/hand-loop ({NUMBER})x$", lines[1])
    assert cos and float(cos[1]) > 0.9999 and float(cos[2]) > 0, lines[1]  # the same vectors as the user's own loop
    assert re.search(rf"ours/forward-only ({NUMBER})x$", lines[2]), lines[2]
    assert re.search(rf"ours/forward-only-nhwc ({NUMBER})x$", lines[3]), lines[3]
    assert re.fullmatch(r"goal   ours/hand-loop >= 1\.30x: (met|missed)   ours/forward-only >= 0\.85x: (met|missed)",
                        lines[4]), lines[4]


def test_bench_embed_scale_quick():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_embed_scale", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert [line.split()[0] for line in lines] == ["scale"] * 4 + ["goal"] * 2, lines
    for line in lines[:4]:
        assert re.search(rf"peak RSS +\d+ MB .* rows/s ({NUMBER})x$", line), line
    growth = [re.search(r"peak RSS growth ([-+]\d+) MB \(goal < 100 MB: (met|missed)\)", line) for line in lines[4:]]
    assert all(growth), lines[4:]
    assert all((int(g[1]) < 100) == (g[2] == "met") for g in growth)  # the verdict agrees with the figure
