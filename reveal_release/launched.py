"""What each process of `rr release --processes N` runs: `rr` with the command line the parent
put in RR_LAUNCH_ARGV (reveal_release.launch)."""

import json
import os
import sys

from reveal_release.cli import main
from reveal_release.launch import ARGV_VAR, die_with_launcher, record_exit

die_with_launcher()
sys.argv = ["rr", *json.loads(os.environ[ARGV_VAR])]
try:
    main()
except SystemExit as exc:
    if record_exit(exc.code):
        raise SystemExit(0) from None
    raise
