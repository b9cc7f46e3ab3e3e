#!/usr/bin/env bash
# Peak memory (max RSS) of the shardguard binary putting, getting and scrubbing a large object,
# healthy and with one location lost (then rebuilt). Usage: benches/rss.sh [MiB] (default 1024). Needs /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
cargo build --release --quiet
bin=$PWD/target/release/shardguard
work=$(mktemp -d "${TMPDIR:-/tmp}/shardguard-rss.XXXXXX")
trap 'rm -rf "$work"' EXIT

rss() { # label, command...
  local label=$1; shift
  /usr/bin/time -f '%M' -o "$work/time" "$@"
  printf '%-34s max RSS %6d KiB\n' "$label" "$(cat "$work/time")"
}

"$bin" init "$work/store" >/dev/null
head -c "$((mib << 20))" /dev/urandom > "$work/input"
rss "put ${mib} MiB (fsync)" "$bin" put "$work/store" big "$work/input"
rss "get ${mib} MiB" sh -c "'$bin' get '$work/store' big > /dev/null"
rss "scrub ${mib} MiB" "$bin" scrub "$work/store"
rss "scrub --deep ${mib} MiB" "$bin" scrub --deep "$work/store"
rm -rf "$work/store/loc-00"
rss "get ${mib} MiB, one location lost" sh -c "'$bin' get '$work/store' big > /dev/null"
mkdir "$work/store/loc-00"
rss "scrub --repair (rebuild a location)" sh -c "'$bin' scrub --repair '$work/store' > /dev/null; test \$? = 1"
