"""`featurestore encoders` / `encoders ls`: every key with its modality, source and offline usability."""

from __future__ import annotations

import json

from click.testing import CliRunner

from featurestore.encoders import _registry
from pipelines.cli import cli


def test_encoders_alone_lists_the_same_as_ls():
    runner = CliRunner()
    alone, ls = runner.invoke(cli, ["encoders"]), runner.invoke(cli, ["encoders", "ls"])
    assert alone.exit_code == ls.exit_code == 0, alone.output + ls.output
    assert alone.output == ls.output
    header, *lines = ls.output.splitlines()
    assert header.split()[:5] == ["key", "modality", "source", "usable", "detail"]
    by_key = {line.split()[0]: line for line in lines}
    assert {"hash", "sentence-transformers", "open_clip", "torchvision"} <= set(by_key)
    assert "image, text" in by_key["open_clip"] and "built-in" in by_key["torchvision"]


def test_encoders_ls_json_says_what_is_usable(monkeypatch):
    monkeypatch.setitem(_registry._REQUIRES, "wordllama", ("fs_no_such_module_here",))
    result = CliRunner().invoke(cli, ["encoders", "ls", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in json.loads(result.output)}
    assert rows["hash"] == {"key": "hash", "modality": "text", "source": "built-in", "usable": True, "detail": ""}
    assert rows["wordllama"]["usable"] is False and "fs_no_such_module_here" in rows["wordllama"]["detail"]
    assert rows["torchvision"]["modality"] == "image"


def test_encoders_fit_is_still_a_subcommand():
    result = CliRunner().invoke(cli, ["encoders", "fit", "--help"])
    assert result.exit_code == 0 and "tfidf-svd" in result.output
