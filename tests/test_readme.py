"""Every Python, shell, SQL and TOML block of README.md runs, as written, on small generated files.

The blocks run in README order in one folder (the "world"), like a reader following it: each Python block in a fresh
namespace (so it must import what it uses), each shell block as one ``bash -euo pipefail`` script with the project's
``featurestore`` on PATH, each SQL block through ``store.sql`` on ``./store`` (``$q`` bound to a vector), each TOML
block parsed (a block whose first line is ``# <path>`` is written to that path first: it is a file other blocks use).

The world holds the files the README names, generated here: ``my_reviews.csv`` and ``new_reviews.csv`` (the "your
own data" walk-through), ``reviews.parquet`` / ``data/reviews.parquet`` (id, review), ``labels.parquet`` (id, label,
product_id, department, price), ``new_ids.parquet`` (id, department, price), ``query.npy`` (a 384-float vector), and
``./store`` with ``reviews_minilm`` embedded by the real all-MiniLM-L6-v2 (the SQL section queries it before the
embedding section makes it).

A block runs unless the line right above it is ``<!-- readme-test: skip (why) -->``: then it is reported as skipped,
with that reason, never skipped silently. Any other ``readme-test`` comment is an error (a typo must not skip).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNS = {"python", "bash", "sh", "console", "sql", "toml"}
_FENCE = re.compile(r"^```\s*([A-Za-z0-9_+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*readme-test:(.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip\s*\((.+)\)\s*$")

@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason given in a skip marker

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order, with the skip reason of a marker right above each."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"README.md:{start + 1}: a code block is never closed")
        above = lines[start - 1] if start > 0 else ""
        skip = None
        marker = _MARKER.match(above.strip())
        if marker:
            reason = _SKIP.match(marker.group(1))
            if not reason:
                raise ValueError(f"README.md:{start}: unknown readme-test directive {marker.group(1).strip()!r}; "
                                 "write <!-- readme-test: skip (why) -->")
            skip = reason.group(1).strip()
        blocks.append(Block(start + 1, lang, "\n".join(lines[start + 1:end]) + "\n", skip))
        i = end + 1
    return blocks


BLOCKS = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.lang in RUNS]


# -- the world ---------------------------------------------------------------------------------------------------
TOPICS = {
    "dress": ["soft cotton dress", "lovely summer dress, flows well", "the dress runs long", "a pretty floral dress"],
    "shoes": ["these shoes run small", "comfortable heels", "sandals hurt after an hour", "sturdy walking boots"],
    "jacket": ["warm jacket for winter", "the coat zipper broke", "a light rain jacket", "cosy fleece coat"],
}
DEPARTMENTS = {"dress": "Dresses", "shoes": "Shoes", "jacket": "Jackets"}


def _reviews(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = list(TOPICS)[i % 3]
        rows.append({"review": f"{rng.choice(TOPICS[label])} ({i})", "label": label, "group": f"p{i % 15}",
                     "price": round(float(rng.uniform(10, 90)), 2)})
    return rows


def _make_world(world: Path) -> None:
    import pandas as pd

    own = pd.DataFrame(_reviews(90)).rename(columns={"group": "product"})
    own.insert(0, "id", np.arange(1, 91))
    own.to_csv(world / "my_reviews.csv", index=False)
    pd.DataFrame({"id": [1001, 1002, 1003], "review": ["a cosy winter coat", "the heels pinch", "a flowing dress"],
                  "price": [70.0, 40.0, 55.0]}).to_csv(world / "new_reviews.csv", index=False)

    rows = _reviews(90, seed=1)
    ids = np.arange(100, 190, dtype=np.int64)
    reviews = pa.table({"id": ids, "review": [r["review"] for r in rows]})
    pq.write_table(reviews, world / "reviews.parquet")
    (world / "data").mkdir()
    pq.write_table(reviews, world / "data" / "reviews.parquet")
    labels = pa.table({"id": ids, "label": [r["label"] for r in rows], "product_id": [r["group"] for r in rows],
                       "department": [DEPARTMENTS[r["label"]] for r in rows], "price": [r["price"] for r in rows]})
    pq.write_table(labels, world / "labels.parquet")
    pq.write_table(labels.select(["id", "department", "price"]).slice(0, 5), world / "new_ids.parquet")
    query = np.random.default_rng(2).standard_normal(384).astype(np.float32)
    np.save(world / "query.npy", query / np.linalg.norm(query))

    for block in BLOCKS:  # files the README shows whole (a job spec): other blocks use them
        first = block.code.splitlines()[0] if block.code.strip() else ""
        path = re.match(r"^#\s*([\w./-]+\.toml)\b", first)
        if block.lang == "toml" and path:
            target = world / path.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)

    import featurestore
    import pipelines

    pipelines.embed(featurestore.open(world / "store"), world / "reviews.parquet", key="id", text="review",
                    encoder="sentence-transformers:all-MiniLM-L6-v2", name="reviews_minilm", progress=False)


class World:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[int] = set()
        bin_dir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_STORE"}
        self.env["PATH"] = bin_dir + os.pathsep + self.env.get("PATH", "")

    def run(self, block: Block) -> None:
        """Run ``block``, after every earlier block not run yet (a block may use what an earlier one made)."""
        for earlier in BLOCKS:
            if earlier.line >= block.line:
                break
            if earlier.skip is None and earlier.line not in self.done:
                self._run(earlier)
        self._run(block)

    def _run(self, block: Block) -> None:
        self.done.add(block.line)
        where = f"README.md:{block.line} ({block.lang})"
        cwd = os.getcwd()
        os.chdir(self.path)
        try:
            if block.lang == "python":
                exec(compile(block.code, where, "exec"), {"__name__": "__readme__"})
            elif block.lang in ("bash", "sh", "console"):
                code = block.code
                if block.lang == "console":
                    code = "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ "))
                proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=self.path, env=self.env,
                                      capture_output=True, text=True, timeout=900)
                assert proc.returncode == 0, (f"{where} failed with exit code {proc.returncode}\n"
                                              f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
            elif block.lang == "sql":
                import featurestore

                params = {"q": np.load(self.path / "query.npy").tolist()}
                used = {k: v for k, v in params.items() if f"${k}" in block.code}
                featurestore.open(self.path / "store").sql(block.code, params=used or None).fetchall()
            elif block.lang == "toml":
                data = tomllib.loads(block.code)
                if re.match(r"^#\s*\S+\.toml", block.code):  # a job spec file: it must load as one
                    from pipelines import JobSpec

                    JobSpec.from_dict(data)
        finally:
            os.chdir(cwd)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("readme-world")
    _make_world(path)
    return World(path)


def test_the_readme_has_runnable_blocks_and_every_skip_says_why():
    assert len(BLOCKS) >= 10
    assert all(b.skip for b in BLOCKS if b.skip is not None)
    langs = {b.lang for b in BLOCKS if b.skip is None}
    assert {"python", "bash", "sql", "toml"} <= langs, langs


def test_the_first_two_commands_stay_as_they_are():
    first = BLOCKS[0]
    assert first.code.splitlines()[:2] == [
        "./dev demo     # creates .venv on first run, then embeds, queries, stacks and reports on real public data",
        "./dev test     # the whole test suite (what CI runs through .ci/run)",
    ]


def test_an_unknown_marker_is_an_error_not_a_skip():
    with pytest.raises(ValueError, match="unknown readme-test directive"):
        readme_blocks("<!-- readme-test: skipp (typo) -->\n```bash\nfalse\n```\n")
    [block] = readme_blocks("<!-- readme-test: skip (installs packages) -->\n```bash\npip install x\n```\n")
    assert block.skip == "installs packages"


@pytest.mark.slow  # the real MiniLM embeds the README's examples
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(world, block):
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    world.run(block)
