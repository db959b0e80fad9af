"""The secrets tests' file search (`tests/helpers/secret_scan`) leaves this
process's SQLite databases alone: reading one would drop the process's POSIX
locks on it, another process would then delete its WAL, and writes are lost
(CI saw "disk I/O error" on SkyPilot's kv_cache after the /tmp search)."""

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.helpers.secret_scan import files_holding_key


def test_searching_this_processs_open_database_loses_no_write(tmp_path: Path) -> None:
    database = tmp_path / 'kv_cache.db'
    db = sqlite3.connect(database)
    db.execute('PRAGMA journal_mode=WAL')
    db.execute("CREATE TABLE kv (key TEXT)")
    db.execute("INSERT INTO kv VALUES ('sk-mithril-in-a-row')")
    db.commit()

    hits, _ = files_holding_key(tmp_path, 'sk-mithril-in-a-row')
    for _ in range(2):
        subprocess.run([sys.executable, '-c',
                        'import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); '
                        "db.execute(\"INSERT INTO kv VALUES ('child')\"); "
                        'db.commit(); db.close()', str(database)], check=True)
        db.execute("INSERT INTO kv VALUES ('parent')")
        db.commit()

    assert sorted(sqlite3.connect(database).execute('SELECT key FROM kv')) == [
        ('child',), ('child',), ('parent',), ('parent',), ('sk-mithril-in-a-row',)]
    assert (tmp_path / 'kv_cache.db-wal').exists()
    assert hits == []  # the process's own database is not searched
