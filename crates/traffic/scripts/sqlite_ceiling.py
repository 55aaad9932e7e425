#!/usr/bin/env python3
"""What SQLite itself allows for the population registry's batch minting, with no Rust,
no sqlx and no gRPC in the way.

It applies the registry's own SQLite migrations to a temporary file (WAL,
synchronous=FULL, the writer's 64 MiB page cache) and runs the writer's per-group
statements from Python's C-level `executemany`: the chain head read, the three IN-list
lookups (request ids, duplicate keys, numbers), one INSERT per citizen and per audit
entry, the chain head update, then COMMIT. Row values have the size and shape of the
benchmark's records. It prints one line `CEILING {json}`.

    python3 crates/traffic/scripts/sqlite_ceiling.py                # the writer's work
    python3 crates/traffic/scripts/sqlite_ceiling.py --no-lookups   # inserts only
    python3 crates/traffic/scripts/sqlite_ceiling.py --blob-hashes  # 32-byte hashes, not hex

Python's own per-row work runs on the same thread, so the figure is a lower bound of
what SQLite can do on this machine with this schema.
"""

import argparse
import hashlib
import json
import os
import pathlib
import random
import sqlite3
import tempfile
import time

MIGRATIONS = pathlib.Path(__file__).resolve().parents[3] / "services/population-registry/migrations/sqlite"
COLUMNS = (
    "personal_id, request_id, content_hash, kind, status, issue_time, replaces, full_name, sex, "
    "date_of_birth, pob_description, pob_province, registration_province, home_town, ethnicity, "
    "nationality, father, mother, unit_code, registration_number, book_number, registration_date, dup_key"
)
MOTHER = json.dumps(
    {
        "full_name": "Nguyễn Thị Hồng Nhung",
        "year_of_birth": 1990,
        "ethnicity": "Kinh",
        "nationality": "VN",
        "residence": "Số 12, ngõ 34 phố Huế, phường Phố Huế, quận Hai Bà Trưng, Hà Nội",
        "personal_id": "001190012345",
    },
    ensure_ascii=False,
)
BIRTHS_PER_DAY = 4110  # the benchmark's register order: the national rate
DAY_2016_01_01 = 735964  # days from 0001-01-01, as the duplicate key counts them


def marks(n):
    return ",".join("?" * n)


def run(numbers, group, lookups, blob_hashes):
    directory = tempfile.mkdtemp(prefix="sqlite-ceiling-")
    path = os.path.join(directory, "population.db")
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "journal_mode = WAL",
        "synchronous = FULL",
        "cache_size = -65536",
        "temp_store = MEMORY",
        "wal_autocheckpoint = 65536",
    ):
        db.execute(f"PRAGMA {pragma}")
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        db.executescript(migration.read_text())
    insert_citizen = (
        f"INSERT OR FAIL INTO citizens ({COLUMNS}) VALUES ({marks(23)}) "
        "ON CONFLICT (personal_id) DO NOTHING"
    )
    insert_audit = (
        "INSERT OR FAIL INTO audit_log (seq, at_micros, action, personal_id, related_id, "
        f"request_id, detail, prev_hash, hash) VALUES ({marks(9)})"
    )
    started = time.monotonic()
    done = seq = 0
    while done < numbers:
        n = min(group, numbers - done)
        db.execute("BEGIN IMMEDIATE")
        db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchall()
        request_ids = [f"bench-ceiling-{done + i}" for i in range(n)]
        day = DAY_2016_01_01 + done // BIRTHS_PER_DAY
        dup_keys = [(day << 40) | random.randrange(1 << 40) for _ in range(n)]
        numbers_drawn = [(1 << 39) + random.randrange(10**11) for _ in range(n)]
        if lookups:
            for c in range(0, n, 2048):
                ids, keys, drawn = request_ids[c : c + 2048], dup_keys[c : c + 2048], numbers_drawn[c : c + 2048]
                db.execute(
                    "SELECT request_id, content_hash, personal_id, issue_time, replaces FROM citizens "
                    f"WHERE request_id IN ({marks(len(ids))})",
                    ids,
                ).fetchall()
                db.execute(
                    f"SELECT dup_key, personal_id FROM citizens WHERE dup_key IN ({marks(len(keys))}) "
                    "AND status = 1 ORDER BY personal_id",
                    keys,
                ).fetchall()
                db.execute(
                    f"SELECT personal_id FROM citizens WHERE personal_id IN ({marks(len(drawn))})", drawn
                ).fetchall()
        citizens, audit = [], []
        for i in range(n):
            digest = hashlib.sha256(request_ids[i].encode()).digest()
            content = digest if blob_hashes else digest.hex()
            citizens.append(
                (
                    numbers_drawn[i], request_ids[i], content, 1, 1, 1_700_000_000_000_000, None,
                    "Nguyễn Văn Minh Khôi", 1, "2016-03-04", "Bệnh viện Phụ sản Hà Nội", "01", "01",
                    "Xã Tân Phú, huyện Quốc Oai, Hà Nội", "Kinh", "VN", None, MOTHER, "U00123",
                    done + i, "2016/01", "2016-03-05", dup_keys[i],
                )
            )
            seq += 1
            audit.append((seq, 1_700_000_000_000_000, "issue", numbers_drawn[i], None, request_ids[i], content, content, content))
        db.executemany(insert_citizen, citizens)
        db.executemany(insert_audit, audit)
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, "head"))
        db.execute("COMMIT")
        done += n
    seconds = time.monotonic() - started
    size_mib = (os.path.getsize(path) + os.path.getsize(path + "-wal")) / 2**20
    db.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    os.rmdir(directory)
    return {
        "numbers": numbers,
        "group": group,
        "lookups": lookups,
        "blob_hashes": blob_hashes,
        "seconds": round(seconds, 2),
        "numbers_per_s": round(numbers / seconds),
        "file_mib": round(size_mib),
        "sqlite_version": sqlite3.sqlite_version,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--group", type=int, default=16_000, help="numbers per transaction")
    parser.add_argument("--no-lookups", action="store_true")
    parser.add_argument("--blob-hashes", action="store_true")
    args = parser.parse_args()
    print("CEILING " + json.dumps(run(args.numbers, args.group, not args.no_lookups, args.blob_hashes)))


if __name__ == "__main__":
    main()
