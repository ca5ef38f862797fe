#!/bin/bash
# Day-over-day dedup of a Redis RDB with each chunk profile (README, Redis).
# Builds a 20 MB dataset on a throw-away redis-server, saves an RDB, changes
# CHANGES keys (default 100 rewritten + 20 hashes + 100 new + 5 lists; the
# README also quotes CHANGES=1500), saves again, and backs both RDBs up with
# `cairn backup --stdin --profile P`, printing the bytes the second one added.
#   cargo build --release -p repo-cli && bash benches/redis_dedup.sh [CHANGES]
set -e
N=${1:-100}
CAIRN=${CAIRN_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/cairn}
D=$(mktemp -d); trap 'redis-cli -p 6999 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$D"' EXIT
mkdir -p $D/srv
redis-server --port 6999 --bind 127.0.0.1 --dir $D/srv --save "" --appendonly no --daemonize yes --logfile $D/srv/log
sleep 0.5
python3 - <<'PY' | redis-cli -p 6999 --pipe > /dev/null
import random, sys
r = random.Random(1)
out = sys.stdout
def cmd(*a):
    out.write("*%d\r\n" % len(a))
    for x in a:
        x = str(x)
        out.write("$%d\r\n%s\r\n" % (len(x.encode()), x))
words = ["alpha","beta","gamma","delta","user","order","item","price","status","paid","shipped","note"]
for i in range(150000):
    cmd("SET", "session:%07d" % i, " ".join(r.choice(words) for _ in range(r.randint(5, 40))))
for i in range(30000):
    cmd("HSET", "user:%06d" % i, "name", "n%d" % i, "email", "u%d@example.org" % i, "score", r.randint(0, 10**6), "bio", " ".join(r.choice(words) for _ in range(20)))
for i in range(2000):
    cmd("RPUSH", "list:%04d" % i, *[r.randint(0, 10**9) for _ in range(50)])
PY
redis-cli -p 6999 SAVE > /dev/null; cp $D/srv/dump.rdb $D/day1.rdb
# Day 2: 1% of the strings and hashes rewritten, 1% new keys, a few lists appended to.
N=$N python3 - <<'PY' | redis-cli -p 6999 --pipe > /dev/null
import os, random, sys
r = random.Random(2)
n = int(os.environ['N'])
out = sys.stdout
def cmd(*a):
    out.write("*%d\r\n" % len(a))
    for x in a:
        x = str(x)
        out.write("$%d\r\n%s\r\n" % (len(x.encode()), x))
for i in r.sample(range(150000), n):
    cmd("SET", "session:%07d" % i, "updated %d" % r.randint(0, 10**9))
for i in r.sample(range(30000), n // 5):
    cmd("HSET", "user:%06d" % i, "score", r.randint(0, 10**6))
for i in range(150000, 150000 + n):
    cmd("SET", "session:%07d" % i, "new session %d" % i)
for i in r.sample(range(2000), max(1, n // 75)):
    cmd("RPUSH", "list:%04d" % i, r.randint(0, 10**9))
PY
redis-cli -p 6999 SAVE > /dev/null; cp $D/srv/dump.rdb $D/day2.rdb
ls -l $D/day1.rdb $D/day2.rdb
export CAIRN_PASSWORD=x
for p in tiny small default; do
  export CAIRN_REPOSITORY=$D/repo-$p CAIRN_CACHE_DIR=$D/cache-$p
  $CAIRN init -q --kdf-memory 64 --kdf-iterations 1
  $CAIRN backup -q --stdin --stdin-filename redis/dump.rdb --profile $p < $D/day1.rdb
  added=$($CAIRN --json backup --stdin --stdin-filename redis/dump.rdb --profile $p < $D/day2.rdb | python3 -c 'import json,sys; v=json.load(sys.stdin); s=v.get("summary", v); print(s["bytes_added"], s.get("bytes_read", s.get("total_bytes")))')
  echo "profile=$p day2_added_and_size=$added"
done
