"""Allow ``python -m bcpay``."""

from bcpay.cli import main

main()
