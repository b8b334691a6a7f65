"""``python -m rnngen`` is ``rnngen``."""

from .cli import main

main(prog_name="rnngen")
