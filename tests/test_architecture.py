"""The layering in pyproject.toml holds (import-linter), and the package list there matches the source tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_a_broken_contract_is_reported(tmp_path, monkeypatch):
    """The check can fail: in a copy of the layout (renamed, so the installed package does not answer), an engine
    module that imports the app breaks the layers contract and a data module that imports click the forbidden one."""
    from importlinter.cli import lint_imports

    pkg = tmp_path / "fakenet"
    for sub in ("", "engine", "app", "data", "training", "remote", "sweep", "cli", "bench"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    for mod in ("protocol", "formatting", "errors"):
        (pkg / f"{mod}.py").write_text("")
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text().replace("tuinet", "fakenet"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lint_imports(config_filename=str(config), no_cache=True) == 0
    (pkg / "engine" / "model.py").write_text("import fakenet.app\n")
    assert lint_imports(config_filename=str(config), no_cache=True) == 1
    (pkg / "engine" / "model.py").write_text("")
    (pkg / "data" / "loader.py").write_text("import click\n")
    assert lint_imports(config_filename=str(config), no_cache=True) == 1


def test_package_list_matches_the_source_tree():
    """pyproject.toml lists packages explicitly (the datasets are mapped in); no package may be left out."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.relative_to(ROOT).parts[:-1]) for p in (ROOT / "tuinet").rglob("__init__.py")}
    datasets = {"tuinet._datasets"} | {f"tuinet._datasets.{d.name}" for d in (ROOT / "datasets").iterdir()
                                        if d.is_dir()}
    assert listed == on_disk | datasets
    assert config["package-dir"] == {"tuinet._datasets": "datasets"}


@pytest.mark.slow
def test_wheel_builds_without_warnings_and_carries_the_datasets(tmp_path):
    """`pip wheel .` prints no setuptools warning, and the wheel holds MNIST and the app's stylesheet."""
    import subprocess
    import sys
    import zipfile

    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), "-v", str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    for bad in ("SetuptoolsDeprecationWarning", "would be ignored", "is absent from the `packages`"):
        assert bad not in out, bad
    wheel = next(tmp_path.glob("tuinet-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tuinet/_datasets/mnist/train-images-idx3-ubyte.gz" in names
    assert "tuinet/_datasets/tabular/iris.csv" in names
    assert "tuinet/app/app.tcss" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_no_undefined_names_no_unused_imports():
    """pyflakes' checks through ruff: an undefined name is a crash waiting in a path no other test takes."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "tuinet", "tests", "benchmarks",
                        "scripts"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
