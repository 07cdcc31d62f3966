#!/usr/bin/env python
"""One-shot schema migration for a deployment (docker-compose `migrate`, k8s Job).

Runs every Alembic head (store + approvals revisions) against
POLICYENGINE_DATABASE_URL, prints the heads now applied and exits 0. Safe to
run again: an up-to-date database is left as it is. Replicas then start with
POLICYENGINE_MIGRATE_ON_START=false so that N replicas never race on DDL.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    url = os.environ.get("POLICYENGINE_DATABASE_URL")
    if not url:
        print("POLICYENGINE_DATABASE_URL is not set", file=sys.stderr)
        return 2
    from sqlalchemy.engine import make_url

    from policyengine.store.migrate import upgrade

    shown = make_url(url).render_as_string(hide_password=True)
    try:
        heads = upgrade(url)
    except Exception as exc:  # report, never print the URL's password
        print(f"migration of {shown} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{shown}: at {', '.join(heads) or '(empty)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
