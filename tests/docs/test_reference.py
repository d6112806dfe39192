"""docs/configuration.md is generated from the schema and is up to date."""

from __future__ import annotations

from appliance.config import reference
from tests.docs import readme


def test_configuration_reference_is_fresh() -> None:
    committed = reference.DOCUMENT.read_text(encoding="utf-8")
    assert committed == reference.render(), (
        "docs/configuration.md is stale: run `python -m appliance.config.reference --write`"
    )


def test_reference_documents_keys_by_their_yaml_names() -> None:
    text = reference.render()
    for section, key in [
        ("`auth`", "`window_s`"),
        ("`logging`", "`access_log`"),
        ("`state`", "`timeout_s`"),
        ("`server`", "`watch_config`"),
        ("`models[].options` with `backend: scripted`", "`json`"),  # an alias of a field
    ]:
        part = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert f"| {key} |" in part, f"{key} missing from {section}"


def test_readme_links_the_reference() -> None:
    assert "(docs/configuration.md)" in readme.text()
