#!/usr/bin/env bash
# Fuzz every target (or the ones named) for SECONDS each, known open bugs
# skipped, and print one summary line per target.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; with
# only stable, set TOOLCHAIN= and RUSTC_BOOTSTRAP=1. The working corpus grows
# in fuzz/corpus/<target>/ (not committed); crashes land in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-90}
shift || true
toolchain=${TOOLCHAIN-+nightly}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^cairn-fuzz$')
fi

mkdir -p logs
# shellcheck disable=SC2086 # $toolchain is empty or one word
cargo $toolchain fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # Known open bugs would stop the run at once; see tests/testkit/src/fuzz.rs.
  CAIRN_FUZZ_SKIP_OPEN=1 cargo $toolchain fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1 || true
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "logs/$t.log" | tail -1 || true)
  if [ -n "$done_line" ]; then
    echo "$t: $done_line"
  else
    echo "$t: FAILED, see fuzz/logs/$t.log"; grep -E 'panicked at|ERROR: libFuzzer|Test unit written' "logs/$t.log" || true
  fi
done
