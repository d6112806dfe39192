"""The package's shape holds: layers, no import circle, small modules, the picture in the README."""

from __future__ import annotations

import pytest

from tests.support import architecture as arch


@pytest.fixture(scope="module")
def modules() -> dict[str, arch.Module]:
    return arch.read_modules()


def test_no_module_imports_a_part_above_it(modules: dict[str, arch.Module]) -> None:
    assert arch.layer_violations(modules) == []


def test_there_is_no_import_circle(modules: dict[str, arch.Module]) -> None:
    assert arch.cycles(modules) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    # The check above is only as good as the finder: a hand-made circle must show.
    a = arch.Module("a.x", arch.PACKAGE, 1, {"a.y"})
    b = arch.Module("a.y", arch.PACKAGE, 1, {"a.z"})
    c = arch.Module("a.z", arch.PACKAGE, 1, {"a.x"})
    d = arch.Module("a.w", arch.PACKAGE, 1, {"a.x"})
    assert arch.cycles({m.name: m for m in (a, b, c, d)}) == [["a.x", "a.y", "a.z"]]


def test_the_layer_check_finds_an_upward_import() -> None:
    wrong = arch.Module("wire.openai.protocol", arch.PACKAGE, 1, {"http.app", "errors"})
    child = arch.Module("child.server", arch.PACKAGE, 1, {"serving.gateway", "config"})
    assert arch.layer_violations({m.name: m for m in (wrong, child)}) == [
        "wire.openai.protocol -> http.app",
        "child.server -> serving.gateway",
    ]


def test_only_the_model_child_loads_a_model_runtime(modules: dict[str, arch.Module]) -> None:
    loading = {m.name for m in modules.values() if m.external & set(arch.MODEL_RUNTIMES)}
    assert loading and all(name.startswith("child.") for name in loading), loading


def test_config_validation_reads_no_files(modules: dict[str, arch.Module]) -> None:
    # The schema's validators see the YAML only; checks that read model files run after
    # validation, passed in by whoever serves the config (appliance.local.CONFIG_CHECKS).
    for name in ("config.schema", "config.model", "config.backends", "config.settings"):
        module = modules[name]
        text = module.path.read_text(encoding="utf-8")
        for call in ("open(", "read_text(", "read_bytes(", ".stat(", ".exists(", "is_file("):
            assert call not in text, f"{name} calls {call}"
        assert not {i.split(".")[0] for i in module.imports} - {"config", "errors", "clip"}


def test_no_module_is_over_the_size_budget(modules: dict[str, arch.Module]) -> None:
    big = {m.name: m.lines for m in modules.values() if m.lines > arch.MAX_LINES}
    assert big == {}


def test_the_package_root_holds_few_modules(modules: dict[str, arch.Module]) -> None:
    root = [m for m in modules.values() if "." not in m.name and m.path.parent == arch.PACKAGE]
    assert len(root) <= arch.MAX_ROOT_MODULES, sorted(m.name for m in root)


def test_the_readme_picture_is_the_code_as_it_is(modules: dict[str, arch.Module]) -> None:
    assert arch.readme_picture() == arch.render(modules), (
        "README's Architecture picture is stale: python -m tests.support.architecture --write"
    )
