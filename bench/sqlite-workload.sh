# A real program's writes for the record-mode benchmark: sqlite3 (WAL
# journal) building a 100,000-row table in 20 transactions, indexing it,
# rewriting a seventh of the rows and deleting an eleventh, then
# checkpointing. Usage: sh sqlite-workload.sh DIR (sqlite3 must be
# installed: apt-get install sqlite3).
set -e
cd "$1"
{
  echo "PRAGMA journal_mode=WAL;"
  echo "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);"
  batch=0
  while [ $batch -lt 20 ]; do
    echo "BEGIN;"
    echo "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000)"
    echo "  INSERT INTO t SELECT $batch * 5000 + x, hex(randomblob(8)), randomblob(200) FROM c;"
    echo "COMMIT;"
    batch=$((batch + 1))
  done
  echo "CREATE INDEX tk ON t(k);"
  echo "UPDATE t SET v = randomblob(200) WHERE id % 7 = 0;"
  echo "DELETE FROM t WHERE id % 11 = 0;"
  echo "PRAGMA wal_checkpoint(TRUNCATE);"
} | sqlite3 app.db > /dev/null
