"""cluster.yaml errors name the place; overrides layer CLI over env over YAML."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appliance.config import Settings, load_config, parse_config
from appliance.errors import ConfigError

YAML = textwrap.dedent(
    """\
    server:
      port: 8000
    auth:
      api_keys:
        - {name: ci, key: "${CI_KEY}"}
    models:
      - name: m0
        backend: scripted
        workers: 2
        options: {reply: ["Hello", " world."]}
      - name: up
        backend: openai
        options:
          base_url: ["http://127.0.0.1:9001/v1", "http://127.0.0.1:9002/v1"]
          api_key: "${UP_KEY:-none}"
          model: served-name
    routes:
      - {alias: chat, targets: [up, m0]}
    """
)
ENV = {"CI_KEY": "secret-ci"}


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=ENV if environ is None else environ)
    return caught.value.problems


def test_valid_config_loads() -> None:
    config = parse_config(YAML, environ=ENV)
    assert [m.name for m in config.models] == ["m0", "up"]
    assert config.auth.api_keys[0].key is not None
    assert config.auth.api_keys[0].key.get_secret_value() == "secret-ci"


def test_base_url_list_gives_one_worker_per_url() -> None:
    config = parse_config(YAML, environ=ENV)
    assert config.models[1].workers == 2


def test_default_after_colon_dash_is_used() -> None:
    config = parse_config(YAML, environ=ENV)
    assert config.models[1].options.api_key.get_secret_value() == "none"  # type: ignore[union-attr]


def test_unknown_key_names_key_path_and_line() -> None:
    assert problems(YAML.replace("workers: 2", "wrokers: 2")) == [
        "models[0].wrokers (line 9): unknown key 'wrokers'"
    ]


def test_bad_type_names_path_and_line() -> None:
    [problem] = problems(YAML.replace("workers: 2", "workers: lots"))
    assert problem.startswith("models[0].workers (line 9): ")
    assert "integer" in problem


def test_missing_env_var_names_it_and_the_place() -> None:
    assert problems(YAML, environ={}) == [
        "auth.api_keys[0].key (line 5): environment variable CI_KEY is not set"
    ]


def test_yaml_syntax_error_names_line_and_column() -> None:
    [problem] = problems(YAML.replace("workers: 2", "workers: [2"))
    assert problem.startswith("YAML syntax error at line ")


def test_unknown_route_target_is_reported_at_the_route() -> None:
    [problem] = problems(YAML.replace("targets: [up, m0]", "targets: [up, nope]"))
    assert problem.startswith("routes[0].targets (line 18): unknown models ['nope']")


def test_backend_options_are_checked_per_backend() -> None:
    [problem] = problems(YAML.replace("model: served-name", "modle: served-name"))
    assert problem == "models[1].options.modle (line 16): unknown key 'modle'"


def test_duplicate_key_is_an_error() -> None:
    [problem] = problems(YAML.replace("port: 8000", "port: 8000\n  port: 9000"))
    assert problem == "server.port (line 3): duplicate key"


def test_every_problem_is_reported_at_once() -> None:
    text = YAML.replace("workers: 2", "workers: 0").replace("port: 8000", "port: 99999")
    found = problems(text)
    assert len(found) == 2
    assert found[0].startswith("server.port (line 2)")
    assert found[1].startswith("models[0].workers (line 9)")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "just a string"])
def test_empty_or_non_mapping_file_is_invalid_not_an_empty_cluster(text: str) -> None:
    assert problems(text)


def test_no_models_is_invalid() -> None:
    [problem] = problems("models: []\n")
    assert problem.startswith("models (line 1)")


def test_key_needs_exactly_one_secret() -> None:
    text = YAML.replace('key: "${CI_KEY}"', 'key: "${CI_KEY}", key_sha256: "' + "a" * 64 + '"')
    [problem] = problems(text)
    assert "exactly one of key or key_sha256" in problem


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", environ={})
    assert "cannot read" in caught.value.problems[0]


def test_env_overrides_yaml_and_names_itself_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(YAML)
    monkeypatch.setenv("APPLIANCE_PORT", "9123")
    monkeypatch.setenv("APPLIANCE_LOG_FORMAT", "console")
    settings = Settings()
    config = load_config(path, environ=ENV, overrides=settings.overrides())
    assert config.server.port == 9123
    assert config.logging.format == "console"

    monkeypatch.setenv("APPLIANCE_PORT", "not-a-port")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV, overrides=Settings().overrides())
    assert caught.value.problems[0].startswith("server.port (from APPLIANCE_PORT): ")


BROKEN = textwrap.dedent(
    """\
    server:
      port: "${PORT}"
      port: 8001
    auth:
      api_keys:
        - {name: ci, key: "${CI_KEY}", models: [m0, ghost]}
    models:
      - name: m0
        backend: scripted
        wrokers: 2
      - name: up
        backend: openai
        max_concurrency: many
        options: {base_url: "http://127.0.0.1:9001/v1"}
    routes:
      - {alias: chat, targets: [up, nope]}
      - {alias: m0, targets: [m0]}
    """
)


def test_every_kind_of_problem_comes_out_of_one_run() -> None:
    assert problems(BROKEN, environ={}) == [
        "server.port (line 2): environment variable PORT is not set",
        "server.port (line 3): duplicate key",
        "auth.api_keys[0].key (line 6): environment variable CI_KEY is not set",
        "models[0].wrokers (line 10): unknown key 'wrokers'",
        "models[1].max_concurrency (line 13): Input should be a valid integer, unable to "
        "parse string as an integer",
        "routes[0].targets (line 16): unknown models ['nope']; models are ['m0', 'up']",
        "routes[1].alias (line 17): alias 'm0' is already a model or alias name",
        "auth.api_keys[0].models (line 6): unknown models ['ghost']; known are "
        "['chat', 'm0', 'up']",
    ]


def test_every_name_that_does_not_resolve_is_reported_in_a_file_otherwise_valid() -> None:
    text = YAML.replace("targets: [up, m0]", "targets: [up, nope]") + (
        "  - {alias: other, targets: [gone]}\n"
    )
    assert problems(text) == [
        "routes[0].targets (line 18): unknown models ['nope']; models are ['m0', 'up']",
        "routes[1].targets (line 19): unknown models ['gone']; models are ['m0', 'up']",
    ]


def test_a_missing_variable_is_not_reported_again_as_a_wrong_type() -> None:
    assert problems(YAML.replace("port: 8000", 'port: "${PORT}"')) == [
        "server.port (line 2): environment variable PORT is not set"
    ]


def test_route_mixing_types_is_reported_with_other_problems() -> None:
    text = textwrap.dedent(
        """\
        models:
          - {name: chat, backend: scripted, workers: none}
          - {name: vec, backend: onnx, options: {}}
        routes:
          - {alias: both, targets: [chat, vec]}
        """
    )
    found = problems(text)
    assert found[0].startswith("models[0].workers (line 2): ")
    assert found[1].startswith("models[1].options.model (line 3): required key is missing")
    assert found[-1] == "routes[0].targets (line 5): targets mix model types ['embedding', 'llm']"
