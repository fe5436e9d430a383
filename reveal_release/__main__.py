"""`python -m reveal_release`: the `rr` command line."""

from reveal_release.cli import main

main()
