"""``python -m tuinet``: the command line."""

from tuinet.cli.entry import run

run()
