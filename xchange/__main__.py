"""``python -m xchange``."""

from xchange.cli import main

main(prog_name="xchange")
