# Postgres beside SQLite (issue 15): the control plane on a shared Postgres, several replicas.
#
#   make postgres        installs Debian's `postgresql` package when initdb is missing
#   make test-postgres   the portal's whole suite (captive-portal/tests/*.rs) against a real Postgres
#
# The tests start their own server (testkit/src/postgres.rs): initdb into a temporary directory, their
# own port on 127.0.0.1, stopped and removed when the test process ends. Nothing is configured system
# wide and no service is started. As root, initdb and postgres run as the package's `postgres` user.

CARGO ?= cargo

.PHONY: postgres test-postgres

postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
	  echo "installing postgresql (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

test-postgres: postgres
	MISSIONGATE_TEST_DB=postgres $(CARGO) test -p captive-portal --no-fail-fast
