from sockbroker.cli import main

raise SystemExit(main())
