"""Config loading and validation: every bad key or value names its path."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eagle
from eagle.config import Config, load_config


def test_defaults_detect_a_frozen_member_within_about_2s() -> None:
    h = Config().health
    # worst case: the member freezes right after a probe succeeded; the next
    # `unhealthy_threshold` probes each start within interval and miss their timeout
    worst = h.interval * (1 + h.jitter) + (h.unhealthy_threshold - 1) * h.interval + h.timeout
    assert worst <= 2.0


def test_short_forms_and_round_trip() -> None:
    cfg = Config.from_dict({"policy": "p2c", "membership": "etcd", "panic_threshold": 0.3})
    assert cfg.policy.name == "p2c"
    assert cfg.membership.provider == "etcd"
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg
    assert Config.from_dict({"membership": {"etcd": {"require_leader": True}}}).membership.etcd
    assert Config.from_dict({"membership": None}).membership.provider is None


def test_subset_section() -> None:
    assert Config().subset.mode is None  # off by default
    cfg = Config.from_dict({"subset": "random"})
    assert (cfg.subset.mode, cfg.subset.size, cfg.subset.seed) == ("random", 20, None)
    assert Config.from_dict({"subset": "off"}).subset.mode is None
    assert Config.from_dict({"subset": None}).subset.mode is None
    full = Config.from_dict(
        {
            "subset": {
                "mode": "aperture",
                "size": 10,
                "min_aperture": 4,
                "coordinate": {"instance": 2, "instances": 8},
                "seed": 2**64 - 1,
            }
        }
    )
    assert full.subset.coordinate.instance == 2 and full.subset.seed == 2**64 - 1
    assert Config.from_dict(full.to_dict()) == full


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": 1}, "bogus: unknown config key"),
        ({"health": {"intervall": 1}}, "health.intervall: unknown config key"),
        ({"health": {"interval": 0}}, "health.interval: must be a positive duration"),
        ({"health": {"timeout": -1}}, "health.timeout: must be a positive duration"),
        ({"health": {"interval": "1s"}}, "health.interval: must be a duration"),
        ({"retry": {"max_attempts": 9}}, "retry.max_attempts: must be 1..5, got 9"),
        ({"retry": {"max_attempts": 2.5}}, "retry.max_attempts: must be a whole number"),
        ({"retry": {"retryable_codes": ["NOPE"]}}, "retry.retryable_codes: unknown gRPC"),
        ({"retry": {"mode": "maybe"}}, "retry.mode: must be one of"),
        ({"retry": {"per_try_timeout": 0}}, "retry.per_try_timeout: must be a positive"),
        ({"retry": {"budget": {"ratio": -1}}}, "retry.budget.ratio: must be"),
        ({"outlier": {"enabled": "yes"}}, "outlier.enabled: must be true or false"),
        ({"keepalive": {"time": float("inf")}}, "keepalive.time: must be a finite"),
        ({"membership": "zookeeper"}, "membership: must be null"),
        ({"panic_threshold": 2}, "panic_threshold: must be 0.0..1.0"),
        (
            {"policy": {"weights": {"a:1": 0}}},
            "policy.weights.a:1: weight must be a positive number",
        ),
        ({"policy": {"weights": {"nope": 1}}}, "policy.weights.nope: bad endpoint"),
        ({"health": []}, "health: must be a mapping"),
        ({"retry": {"initial_backoff": 2, "max_backoff": 1}}, "retry.max_backoff: must be >="),
        ({"subset": "nearest"}, "subset.mode: must be one of null, off, aperture, random"),
        ({"subset": {"size": 0}}, "subset.size: must be 1..1000000, got 0"),
        ({"subset": {"size": 2.5}}, "subset.size: must be a whole number"),
        ({"subset": {"min_aperture": True}}, "subset.min_aperture: must be a number"),
        ({"subset": {"seed": -1}}, "subset.seed: must be 0..18446744073709551615, got -1"),
        ({"subset": {"seed": "abc"}}, "subset.seed: must be null or a number"),
        ({"subset": {"coordinate": {"instance": -1}}}, "subset.coordinate.instance: must be"),
        ({"subset": {"coordinate": {"instances": 0}}}, "subset.coordinate.instances: must be"),
        (
            {"subset": {"coordinate": {"instance": 5, "instances": 5}}},
            "subset.coordinate.instance: must be less than instances (5), got 5",
        ),
        ({"subset": {"coordinate": {"index": 1}}}, "subset.coordinate.index: unknown config key"),
        ({"subset": []}, "subset: must be a mapping"),
    ],
)
def test_bad_config_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        Config.from_dict(data)
    assert message in str(err.value)


def test_unknown_picker_is_named_when_the_channel_is_built() -> None:
    with pytest.raises(ValueError, match=r"policy\.name: unknown picker 'fastest'"):
        eagle.insecure_channel("127.0.0.1:1", config={"policy": "fastest"})


def test_files_and_env(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"health": {"interval": 0.25}}))
    t = tmp_path / "c.toml"
    t.write_text('policy = "p2c"\n[retry]\nmax_attempts = 4\n')
    assert load_config(str(j)).health.interval == 0.25
    assert load_config(t).retry.max_attempts == 4
    monkeypatch.setenv("EAGLE_CONFIG", str(t))
    assert load_config(None).policy.name == "p2c"
    bad = tmp_path / "bad.toml"
    bad.write_text("[retry\n")
    with pytest.raises(ValueError, match="not valid toml"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"must end in \.json or \.toml"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="cannot read"):
        load_config(tmp_path / "missing.json")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10)
    | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "policy",
        "health",
        "retry",
        "outlier",
        "keepalive",
        "membership",
        "subset",
        "panic_threshold",
        "x",
    ]
)


@given(st.dictionaries(_keys, _json, max_size=4))
def test_fuzz_config_only_raises_value_error(data: dict[str, Any]) -> None:
    try:
        Config.from_dict(data)
    except ValueError as exc:
        assert ":" in str(exc)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "interval": _json,
            "timeout": _json,
            "unhealthy_threshold": _json,
            "jitter": _json,
            "service": _json,
        },
    )
)
def test_fuzz_health_section(data: dict[str, Any]) -> None:
    try:
        cfg = Config.from_dict({"health": data})
    except ValueError as exc:
        assert str(exc).startswith("health")
    else:
        assert cfg.health.interval > 0 and cfg.health.timeout > 0
