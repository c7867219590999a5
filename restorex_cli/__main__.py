import logging
import os
import sys

from restorex_cli.cli import STOPPED, main

code = main()
if code in STOPPED:
    # Stopped by Ctrl-C or SIGTERM: every temporary file is already gone (the command's own cleanup ran
    # before main returned), so leave now rather than spend a second or more tearing down torch and
    # freeing gigabytes of tensors: the stop is felt at once (benchmarks/bench_interrupt.py).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
