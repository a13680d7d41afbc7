from netjobs.exporter import main

raise SystemExit(main())
