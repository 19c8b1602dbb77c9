"""Allow `python -m glowing_fiesta`."""

from glowing_fiesta.cli import main

main()
