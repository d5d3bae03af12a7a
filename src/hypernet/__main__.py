from hypernet.cli import main

raise SystemExit(main())
