"""Packaging glue: ship ./datasets inside the installed package as ``tuinet._datasets``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["tuinet", "tuinet.*"]) + ["tuinet._datasets"],
    package_dir={"tuinet._datasets": "datasets"},
    package_data={"tuinet.tui": ["*.tcss"], "tuinet._datasets": ["*.md", "mnist/*.gz", "tabular/*"]},
)
