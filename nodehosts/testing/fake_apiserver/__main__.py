"""`python -m nodehosts.testing.fake_apiserver --nodes N`: serve a fake cluster until interrupted."""

from nodehosts.testing.fake_apiserver.server import main

raise SystemExit(main())
