# The write-heavy workload every recording benchmark runs (POSIX sh; runs
# under busybox in containers): small-file churn (2,000 files written, half
# rewritten, half deleted), an appending log (20,000 lines), and in-place
# rewrites of a 64 MiB file (100 random 4 KiB pages, 10 times, synced each
# time). Usage: sh workload.sh DIR. Prints the bytes it wrote.
set -e
dir=$1
mkdir -p "$dir/small"
i=1; while [ $i -le 2000 ]; do printf 'file %08d\n' $i > "$dir/small/f$i"; i=$((i + 1)); done
i=1; while [ $i -le 2000 ]; do printf 'rewr %08d\n' $i > "$dir/small/f$i"; i=$((i + 2)); done
i=2; while [ $i -le 2000 ]; do rm "$dir/small/f$i"; i=$((i + 2)); done
i=1; while [ $i -le 20000 ]; do printf 'log line %08d\n' $i; i=$((i + 1)); done >> "$dir/app.log"
head -c 67108864 /dev/urandom > "$dir/data.db"
round=1
while [ $round -le 10 ]; do
  page=1
  while [ $page -le 100 ]; do
    dd if=/dev/urandom of="$dir/data.db" bs=4096 count=1 seek=$(( ($round * 7919 + $page * 104729) % 16384 )) conv=notrunc 2>/dev/null
    page=$((page + 1))
  done
  sync
  round=$((round + 1))
done
# 3,000 small writes of 14 B, 20,000 log lines of 18 B, 64 MiB, 1,000 pages.
echo "bytes-written $(( 3000 * 14 + 20000 * 18 + 67108864 + 1000 * 4096 ))"
