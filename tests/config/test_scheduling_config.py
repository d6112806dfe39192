"""Scheduling settings: a key's priority class, a route's spill_after_s."""

from __future__ import annotations

from appliance.config import parse_config
from tests.config.test_loader import ENV, YAML, problems


def test_a_key_is_standard_unless_it_says_otherwise() -> None:
    config = parse_config(YAML, environ=ENV)
    assert config.auth.api_keys[0].priority == "standard"
    assert config.routes[0].spill_after_s is None
    text = YAML.replace('key: "${CI_KEY}"}', 'key: "${CI_KEY}", priority: batch}')
    assert parse_config(text, environ=ENV).auth.api_keys[0].priority == "batch"


def test_an_unknown_priority_is_an_error_at_the_key() -> None:
    [problem] = problems(YAML.replace('key: "${CI_KEY}"}', 'key: "${CI_KEY}", priority: urgent}'))
    assert problem.startswith("auth.api_keys[0].priority (line 5):"), problem
    assert "'interactive', 'standard' or 'batch'" in problem


def test_spill_after_s_needs_a_target_to_spill_to() -> None:
    spilling = YAML.replace("targets: [up, m0]}", "targets: [up, m0], spill_after_s: 0.5}")
    assert parse_config(spilling, environ=ENV).routes[0].spill_after_s == 0.5
    [problem] = problems(spilling.replace("targets: [up, m0]", "targets: [up]"))
    assert problem.startswith("routes[0].spill_after_s (line 18): spill_after_s needs"), problem
