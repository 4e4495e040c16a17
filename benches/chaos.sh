#!/usr/bin/env bash
# The long chaos run: the chaos test of tests/it/chaos.rs with many runs (300 unless
# PIPEWRIGHT_CHAOS_RUNS says otherwise), printing its seed and summary (runs by state,
# kills) and the wall time. A failing seed replays with PIPEWRIGHT_CHAOS_SEED=<seed>.
# Through `cargo test`, not nextest, whose slow-timeout would end a long run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIPEWRIGHT_CHAOS_RUNS="${PIPEWRIGHT_CHAOS_RUNS:-300}"
start=$(date +%s)
cargo test -j 2 -p pipewright-tests --test it \
    chaos::chaos_kills_of_agents_and_the_server_keep_every_promise -- --exact --nocapture 2>&1 |
    grep --line-buffered -E '^chaos:|^test |panicked|assertion|left:|right:'
echo "chaos: $PIPEWRIGHT_CHAOS_RUNS runs in $(($(date +%s) - start)) s"
