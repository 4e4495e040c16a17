#!/usr/bin/env bash
# Runs two builds of the serve bench (tests/benches/serve.rs) in turns on this machine and
# prints each figure of both side by side, so that a change is judged against its base in
# the same run, under the same disk and load:
#
#   benches/serve-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
#
# A binary is what `cargo bench -p pipewright-tests --bench serve --no-run` prints as the
# bench's executable (copy it before building the other revision). Every round runs the
# before binary, then the after one; PIPEWRIGHT_BENCH_SECONDS (default 10) and
# PIPEWRIGHT_BENCH_ONLY are passed on. Each run's own output is kept in a directory of
# its own, named at the end. Between runs the disk is synced and the machine left idle
# for a moment, so that neither run pays for the other's writes.
set -euo pipefail

before=${1:?usage: serve-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]}
after=${2:?usage: serve-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]}
rounds=${3:-3}
export PIPEWRIGHT_BENCH_SECONDS=${PIPEWRIGHT_BENCH_SECONDS:-10}
out=$(mktemp -d -t serve-compare.XXXXXX)

for round in $(seq 1 "$rounds"); do
  for side in before after; do
    binary=$before
    [ "$side" = after ] && binary=$after
    printf 'round %s: %s (%s)\n' "$round" "$side" "$binary" >&2
    # What the previous run wrote is flushed and its containers gone before the next starts.
    sync
    sleep 3
    "$binary" --bench >"$out/$round-$side.txt" 2>&1 || {
      echo "the $side run of round $round failed; see $out/$round-$side.txt" >&2
      exit 1
    }
  done
done

# One line per figure and round: "name | before | after".
for round in $(seq 1 "$rounds"); do
  echo
  printf "%-48s %-28s %s\n" "round $round" before after
  awk -v side=before '{ print side "\t" $0 }' "$out/$round-before.txt" >"$out/$round.tsv"
  awk -v side=after '{ print side "\t" $0 }' "$out/$round-after.txt" >>"$out/$round.tsv"
  awk -F'\t' '
    function figure(line,   m) {
      if (match(line, /p50 +[0-9.]+ ms +p99 +[0-9.]+ ms/)) {
        m = substr(line, RSTART, RLENGTH); gsub(/ +/, " ", m); return m
      }
      if (match(line, /p50 +[0-9.]+ ms/)) {
        m = substr(line, RSTART, RLENGTH); gsub(/ +/, " ", m); return m
      }
      return ""
    }
    {
      f = figure($2)
      if (f == "") next
      name = $2; sub(/ +p50.*/, "", name); sub(/ +[0-9]+ req.*/, "", name)
      if (!(name in seen)) { seen[name] = 1; order[++n] = name }
      value[$1, name] = f
    }
    END {
      for (i = 1; i <= n; i++) {
        name = order[i]
        b = ((("before", name) in value) ? value["before", name] : "-")
        a = ((("after", name) in value) ? value["after", name] : "-")
        printf "%-48s %-28s %s\n", name, b, a
      }
    }' "$out/$round.tsv"
done
echo
echo "each run's output: $out"
