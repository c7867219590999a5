"""``python -m restorex_core``: an alias of ``python -m restorex_cli``, kept for existing scripts.

Runs only under ``-m``; nothing in the core imports the command line.
"""

from restorex_cli.cli import main

raise SystemExit(main())
