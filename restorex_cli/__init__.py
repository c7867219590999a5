"""RestoreX command line: exposure-correct image files with a RestoreX checkpoint (``python -m restorex_cli``).

The application layer over :mod:`restorex_core`: argument parsing, image files in and out, progress and exit
codes. It imports the core; the core never imports it.
"""
