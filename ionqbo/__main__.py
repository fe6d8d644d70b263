"""Allow ``python -m ionqbo``."""

from ionqbo.cli import main

main()
