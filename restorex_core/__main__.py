from restorex_core.cli import main

raise SystemExit(main())
