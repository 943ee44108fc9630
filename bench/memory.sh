#!/usr/bin/env bash
# Peak memory with a large file in the app (figures, not assertions): a sparse file of
# BUILD_SIZE (default 4G) in the FastAPI example's handler package, then
#   `ocilambda build` (app-only rebuild: the deps layer is cached, so no uv child runs
#   and the figure is ocilambda's own), and
#   `ocilambda zip` with a file of ZIP_SIZE (default 200M: a zip's unzipped content must
#   stay under Lambda's 250 MB, so a 4 GiB file is refused before any byte is read).
# Target: under 64 MiB whatever the file sizes.
# Usage: bench/memory.sh [BUILD_SIZE [ZIP_SIZE]]; OCILAMBDA_BIN=path skips the release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/ensure-tools.sh
. bench/lib.sh
. scripts/local-registry.sh
build_size=${1:-4G}
zip_size=${2:-200M}

if [ -z "${OCILAMBDA_BIN:-}" ]; then
	cargo build --release --locked --quiet
	OCILAMBDA_BIN=$PWD/target/release/ocilambda
fi
work=$(mktemp -d)
trap 'kill "$REGISTRY_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
start_local_registry "$work/registry" 2>/dev/null
base="$REGISTRY/lambda/python:3.11"
cp -r examples/fastapi-app "$work/app"
export OCILAMBDA_CACHE_DIR="$work/cache"

# Peak RSS in MiB of "$@" (its output discarded): GNU time's maximum resident set when
# installed, else the process's VmHWM read from /proc just before it exits.
peak_rss() {
	if [ -x /usr/bin/time ]; then
		/usr/bin/time -o "$work/rss" -f %M "$@" >/dev/null 2>"$work/err" || {
			cat "$work/err" >&2
			return 1
		}
		echo $(($(tail -1 "$work/rss") / 1024))
		return
	fi
	"$@" >/dev/null 2>"$work/err" &
	local pid=$! hwm=0 kb
	while kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$kb" ]; do
		hwm=$kb
		sleep 0.05
	done
	wait "$pid" || {
		cat "$work/err" >&2
		return 1
	}
	echo $((hwm / 1024))
}

# Warm the caches without the big file, so the measured runs rebuild only the app.
"$OCILAMBDA_BIN" build "$work/app" --base "$base" >/dev/null 2>&1
"$OCILAMBDA_BIN" zip "$work/app" >/dev/null 2>&1

truncate -s "$build_size" "$work/app/app/big.bin"
t0=$(date +%s%N)
rss=$(peak_rss "$OCILAMBDA_BIN" build "$work/app" --base "$base")
t1=$(date +%s%N)
echo "build, ${build_size} sparse file in the app: peak RSS ${rss} MiB ($(((t1 - t0) / 1000000)) ms)"

rm -f "$work/app/app/big.bin"
truncate -s "$zip_size" "$work/app/app/big.bin"
t0=$(date +%s%N)
rss=$(peak_rss "$OCILAMBDA_BIN" zip "$work/app")
t1=$(date +%s%N)
echo "zip, ${zip_size} sparse file in the app:   peak RSS ${rss} MiB ($(((t1 - t0) / 1000000)) ms)"
