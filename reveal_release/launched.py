"""What each process of `rr release --processes N` runs: `rr` with the command line the parent
put in RR_LAUNCH_ARGV (reveal_release.launch).

Each process leaves through os._exit once its atexit handlers (the run lock's release among
them) have run: the ordinary interpreter exit tears down the process group's C++ threads, and
when another process has already gone that ends in std::terminate (SIGABRT), which the
launcher reports as a failed child with a traceback after the one-line refusal."""

import atexit
import json
import os
import sys

from reveal_release.cli import main
from reveal_release.launch import ARGV_VAR, die_with_launcher, exit_code, record_exit


def _leave(code: int) -> None:
    """Run the atexit handlers, flush the streams, and exit with code at once."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


die_with_launcher()
sys.argv = ["rr", *json.loads(os.environ[ARGV_VAR])]
try:
    main()
except SystemExit as exc:
    if isinstance(exc.code, str):
        print(exc.code, file=sys.stderr)
    _leave(0 if record_exit(exc.code) else exit_code(exc.code))
_leave(0)
