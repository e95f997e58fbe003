"""The examples in ``docs/`` run as tests.

* every fenced ```` ```python ```` block in ``docs/*.md`` runs (each in a fresh namespace;
  blocks that need servers start a real :class:`~eagle.testing.cluster.LocalCluster`);
  ```` ```python notest ```` blocks are shown, not run;
* every ```` ```json ```` and ```` ```toml ```` block is an eagle config and must load
  (``notest`` after the language skips it, e.g. for command output);
* ``docs/configuration.md`` names every config key, and ``docs/observability.md`` every
  exported metric.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import typing
from pathlib import Path

import pytest

import eagle

DOCS = Path(__file__).resolve().parents[1] / "docs"
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


def _blocks(lang: str) -> list[tuple[str, int, str]]:
    out = []
    for md in sorted(DOCS.glob("*.md")):
        text = md.read_text()
        for m in _FENCE.finditer(text):
            info = m.group(1).split()
            if not info or info[0] != lang or "notest" in info[1:]:
                continue
            line = text.count("\n", 0, m.start()) + 1
            out.append((md.name, line, m.group(2)))
    return out


def _ids(blocks: list[tuple[str, int, str]]) -> list[str]:
    return [f"{name}:{line}" for name, line, _ in blocks]


PYTHON = _blocks("python")
CONFIGS = _blocks("json") + _blocks("toml")


def test_docs_exist() -> None:
    for name in (
        "configuration.md",
        "pickers.md",
        "architecture.md",
        "troubleshooting.md",
        "observability.md",
    ):
        assert (DOCS / name).is_file(), name
    assert PYTHON, "no python examples found in docs/"


@pytest.mark.parametrize(("name", "line", "code"), PYTHON, ids=_ids(PYTHON))
def test_python_example_runs(name: str, line: int, code: str) -> None:
    compiled = compile(code, f"docs/{name}:{line}", "exec")
    exec(compiled, {"__name__": f"docs_{Path(name).stem}"})


@pytest.mark.parametrize(("name", "line", "code"), CONFIGS, ids=_ids(CONFIGS))
def test_config_example_loads(name: str, line: int, code: str) -> None:
    data = json.loads(code) if code.lstrip().startswith("{") else tomllib.loads(code)
    eagle.Config.from_dict(data)


def _config_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        keys.append(path)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            keys.extend(_config_keys(hint, f"{path}."))
    return keys


def test_configuration_reference_names_every_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [k for k in _config_keys(eagle.Config) if f"`{k}`" not in text]
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"


def test_observability_names_every_metric() -> None:
    import prometheus_client  # the `prometheus` extra, installed by make test

    import eagle.ops.metrics

    reg = prometheus_client.CollectorRegistry()
    eagle.ops.metrics.PrometheusMetrics(reg)
    names = {m.name for m in reg.collect()}
    text = (DOCS / "observability.md").read_text()
    counters = {m.name for m in reg.collect() if m.type == "counter"}
    missing = [n for n in names if f"`{n}_total`" not in text and f"`{n}`" not in text]
    assert not missing, f"docs/observability.md does not document: {', '.join(missing)}"
    for n in counters:
        assert f"`{n}_total`" in text, f"counter {n} must be documented with _total"
