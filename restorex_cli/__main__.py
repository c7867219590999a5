from restorex_cli.cli import main

raise SystemExit(main())
