from tao_engine.cli import main

raise SystemExit(main())
