from looplet.cli import main

raise SystemExit(main())
