"""The suite's own shape: tests mirror the packages, and share helpers only through tests/support/.

A test module that imports another (or conftest) couples tests that should stand alone: helpers go
in tests/support/, and conftest.py holds fixtures only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
PRODUCT = TESTS.parent / "leadctl"
SHARED = "tests.support"
BESIDE_THE_PACKAGES = {"support", "system"}  # helpers, and runs across every package


def _module_name(path: Path) -> str:
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from tests import x` or `from . import x` imports the module x
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def _allowed(module: str) -> bool:
    inside_tests = module == "tests" or module.startswith("tests.") or module.split(".")[0] == "conftest"
    return not inside_tests or module == SHARED or module.startswith(SHARED + ".")


def _python_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def test_no_test_module_imports_another_or_conftest() -> None:
    offences = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {module}"
        for path in _python_files()
        for line, module in _imported(path)
        if not _allowed(module)
    ]
    assert offences == [], "share helpers through tests/support/:\n" + "\n".join(offences)


def test_the_support_package_is_what_test_modules_share() -> None:
    support = TESTS / "support"
    assert (support / "__init__.py").is_file()
    assert not list(support.rglob("test_*.py")), "tests/support/ holds helpers, not tests"


def test_conftest_holds_fixtures_only() -> None:
    tree = ast.parse((TESTS / "conftest.py").read_text(encoding="utf-8"))
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    assert functions, "conftest.py defines the suite's fixtures"
    helpers = [f.name for f in functions if not (_is_fixture(f) or f.name.startswith("pytest_"))]
    assert helpers == [], f"move these helpers to tests/support/: {helpers}"
    others = [
        type(node).__name__
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.Assign | ast.AnnAssign)
    ]
    assert others == [], f"conftest.py defines {others}: put them in tests/support/"


def _is_fixture(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def _code_packages() -> list[Path]:
    """Every folder of leadctl/ holding Python modules (a folder of only data files is not one)."""
    return sorted(
        folder.relative_to(PRODUCT)
        for folder in PRODUCT.rglob("*")
        if folder.is_dir() and (folder / "__init__.py").is_file() and _modules(folder)
    )


def _modules(folder: Path) -> list[Path]:
    return [path for path in folder.glob("*.py") if path.name != "__init__.py"]


@pytest.mark.parametrize("package", _code_packages(), ids=str)
def test_each_package_has_a_mirror_folder_of_tests(package: Path) -> None:
    mirror = TESTS / package
    assert (mirror / "__init__.py").is_file(), f"leadctl/{package}/ has no tests/{package}/ package"
    assert list(mirror.glob("test_*.py")), f"tests/{package}/ holds no test module"


def test_every_test_folder_mirrors_a_package() -> None:
    folders = {
        path.parent.relative_to(TESTS)
        for path in TESTS.rglob("__init__.py")
        if path.parent != TESTS and "__pycache__" not in path.parts
    }
    strays = sorted(
        str(folder)
        for folder in folders
        if folder.parts[0] not in BESIDE_THE_PACKAGES and not (PRODUCT / folder / "__init__.py").is_file()
    )
    assert strays == [], f"test folders without a leadctl package of that name: {strays}"
