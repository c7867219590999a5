"""``python -m restorex_core``: an alias of ``python -m restorex_cli``, kept for existing scripts.

Runs only under ``-m``; nothing in the core imports the command line.
"""

import restorex_cli.__main__  # noqa: F401  (runs the command line, with its fast exit after a stop)
