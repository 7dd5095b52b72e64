"""The gateways' init container: wait until the database's schema is at head (the migration
Job's work), so that a gateway never starts on an older schema. Reads DATABASE_URL as the
service does; runs on the service's image, from its working directory (alembic.ini)."""

from __future__ import annotations

import os
import sys
import time

from app.migrations import pending_migrations
from modules.config import Settings


def main() -> int:
    url = Settings().effective_database_url
    interval = float(os.environ.get("WAIT_INTERVAL_SECONDS", "5"))
    while True:
        try:
            problem = pending_migrations(url)
        except Exception as exc:  # the database may be starting too; its URL is never shown
            problem = f"cannot reach the database yet ({type(exc).__name__})"
        if problem is None:
            print("the database schema is at head", flush=True)
            return 0
        print(f"waiting for the migration Job: {problem}", flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
