#!/usr/bin/env python3
"""What the civil registry's relay pays per claim when the outbox holds a backlog (the
population registry was down for a long time, or a replay ran against it while it was).

It applies the civil registry's own SQLite migrations to a temporary file (WAL,
synchronous=FULL), queues N rows due in creation order (as an outage leaves them), and times
the relay's claim of 500 rows ordered two ways: by next attempt (the due index serves the
filter and the order) and by creation (the earlier query: every due row sorted per
claim); then the two queries for when the next row falls due. A claim is a
write: the registry's group commits wait for it. Prints one line `BACKLOG {json}`.

    python3 crates/traffic/scripts/outbox_backlog.py --rows 1000000
"""

import argparse
import json
import os
import pathlib
import sqlite3
import tempfile
import time
import uuid

MIGRATIONS = pathlib.Path(__file__).resolve().parents[3] / "services/civil-registry/migrations/sqlite"

CLAIM = """UPDATE outbox SET lease_owner = 'relay', lease_until_ms = ?1, attempts = attempts + 1
    WHERE issue_key IN (SELECT issue_key FROM outbox WHERE next_attempt_ms <= ?2 AND lease_until_ms <= ?2
                        ORDER BY {order} LIMIT 500)
    AND next_attempt_ms <= ?2 AND lease_until_ms <= ?2"""
NEXT_DUE = {
    "next_due_ms": "SELECT MIN(next_attempt_ms) FROM outbox WHERE lease_until_ms <= ?1",
    "next_due_before_ms": "SELECT MIN(CASE WHEN lease_until_ms > next_attempt_ms "
    "THEN lease_until_ms ELSE next_attempt_ms END) FROM outbox WHERE ?1 = ?1",
}


def timed_ms(conn, sql, params, rounds):
    best = None
    for _ in range(rounds):
        start = time.perf_counter()
        conn.execute(sql, params).fetchall()
        conn.commit()
        took = (time.perf_counter() - start) * 1000
        best = took if best is None else min(best, took)
    return round(best, 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "civil.db"))
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        for migration in sorted(MIGRATIONS.glob("*.sql")):
            conn.executescript(migration.read_text())
        payload = b"\x01" * 300
        conn.executemany(
            "INSERT INTO outbox (issue_key, registration_id, kind, payload, attempts, "
            "next_attempt_ms, lease_owner, lease_until_ms, created_at_ms, last_error) "
            "VALUES (?1, ?1, 'ISSUE', ?2, 0, ?3, NULL, 0, ?3, NULL)",
            ((str(uuid.uuid7() if hasattr(uuid, "uuid7") else uuid.uuid4()), payload, 1_000 + i)
             for i in range(args.rows)),
        )
        conn.commit()
        now = 10**12
        result = {"rows": args.rows}
        for key, order in (("claim_ms", "next_attempt_ms"), ("claim_before_ms", "created_at_ms")):
            result[key] = timed_ms(conn, CLAIM.format(order=order), (now + 60_000, now), args.rounds)
        for key, sql in NEXT_DUE.items():
            result[key] = timed_ms(conn, sql, (now,), args.rounds)
        conn.close()
    print("BACKLOG " + json.dumps(result))


if __name__ == "__main__":
    main()
