from zamzoo.cli import main

raise SystemExit(main())
