#!/usr/bin/env bash
# Invoke benchmark for the FastAPI example (figures, not assertions), on the runnable
# stand-in base (testdata/runtime-base: Debian's python3.11 + awslambdaric):
#   cold invoke, unpack + start: `ocilambda invoke` with an empty invoke cache (blobs local);
#   cold invoke, start only:     `ocilambda invoke` reusing the unpacked rootfs;
#   edit + build + invoke:       an app-only edit, `ocilambda build`, `ocilambda invoke`
#                                (target: at most 0.5x the cold invoke), with the
#                                rebuild (target 50 ms) and the unpack (target 30 ms) apart;
#   the runtime's own Init Duration (from the REPORT line);
#   warm invoke latency:         curl against `ocilambda invoke --serve`, after the first.
# Usage: bench/invoke.sh [WARM_REQUESTS, default 50]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/ensure-tools.sh
. bench/lib.sh
. scripts/local-registry.sh
warm_n=${1:-50}

cargo build --release --locked --quiet
ocilambda=$PWD/target/release/ocilambda
work=$(mktemp -d)
serve_pid=
cleanup() {
	[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
	kill "$REGISTRY_PID" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
start_local_registry "$work/registry" 2>/dev/null
bash testdata/runtime-base/make-runtime-base.sh "$REGISTRY" "$PWD/target/tmp/runtime-base" 2>/dev/null
base="$REGISTRY/runnable/lambda/python:3.11"
cp -r examples/fastapi-app "$work/app"
export OCILAMBDA_CACHE_DIR="$work/cache"
"$ocilambda" build "$work/app" --base "$base" --quiet >/dev/null 2>&1
event="$work/event.json"
echo '{"httpMethod": "GET", "path": "/", "requestContext": {}, "version": "1.0"}' >"$event"
# Once, to fetch the base layers the layout leaves out: later runs measure local work.
"$ocilambda" invoke --project "$work/app" --event "$event" >/dev/null 2>&1

ms_of() { # wall milliseconds of "$@", its stderr kept in $work/last.err
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>"$work/last.err"
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}
init_ms() { sed -n 's/.*Init Duration: \([0-9.]*\) ms.*/\1/p' "$work/last.err" | head -1; }
unpack_ms() { sed -n 's/^Unpacked image .* in \(.*\)$/\1/p' "$work/last.err"; }
ms_now() { echo $(($(date +%s%N) / 1000000)); }

cold=() unpack=() inits=()
for _ in 1 2 3 4 5; do
	rm -rf "$OCILAMBDA_CACHE_DIR/invoke-v2"
	cold+=("$(ms_of "$ocilambda" invoke --project "$work/app" --event "$event")")
	unpack+=("$(unpack_ms)")
done
echo "unpacked rootfs:            $(grep '^Unpacked' "$work/last.err" | sed 's/^Unpacked image [^ ]* //')"
# The same layers through GNU tar, for scale: file creation dominates on most disks.
layout="$work/app/.ocilambda/image"
blobs=$(python3 - "$layout" "$OCILAMBDA_CACHE_DIR" <<'PY'
import json, os, sys
layout, cache = sys.argv[1], sys.argv[2]
index = json.load(open(os.path.join(layout, "index.json")))
blob = lambda d: os.path.join(layout, "blobs", "sha256", d[7:])
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
for layer in manifest["layers"]:
    path = blob(layer["digest"])
    print(path if os.path.exists(path) else os.path.join(cache, "blobs", "sha256", layer["digest"][7:]))
PY
)
tars=()
for _ in 1 2 3; do
	rm -rf "$work/tarx" && mkdir "$work/tarx"
	t0=$(date +%s%N)
	for b in $blobs; do tar -xzf "$b" -C "$work/tarx" --no-same-owner 2>/dev/null || true; done
	tars+=($((($(date +%s%N) - t0) / 1000000)))
done
rm -rf "$work/tarx"
echo "  same layers, tar -xzf:    $(echo "${tars[*]}" | median) ms (median of 3; runs: ${tars[*]})"
echo "cold invoke, unpack+start:  $(echo "${cold[*]}" | median) ms (median of 5; runs: ${cold[*]}; unpack: ${unpack[*]})"
start=()
for _ in 1 2 3 4 5; do
	start+=("$(ms_of "$ocilambda" invoke --project "$work/app" --event "$event")")
	inits+=("$(init_ms)")
done
echo "cold invoke, start only:    $(echo "${start[*]}" | median) ms (median of 5; runs: ${start[*]})"
echo "  of which Init Duration:   $(echo "${inits[*]}" | median) ms (runtime start to its first /next)"

# The edit -> build -> invoke loop, all caches warm: what a developer waits for.
loop=() builds=() loop_unpack=()
for i in 1 2 3 4 5; do
	echo "# edit $i" >>"$work/app/app/main.py"
	t0=$(ms_now)
	"$ocilambda" build "$work/app" --base "$base" --quiet >/dev/null 2>&1
	t1=$(ms_now)
	"$ocilambda" invoke --project "$work/app" --event "$event" >/dev/null 2>"$work/last.err"
	t2=$(ms_now)
	builds+=($((t1 - t0)))
	loop+=($((t2 - t0)))
	loop_unpack+=("$(unpack_ms)")
done
cold_median=$(echo "${cold[*]}" | median)
loop_median=$(echo "${loop[*]}" | median)
echo "edit + build + invoke:      ${loop_median} ms (median of 5; runs: ${loop[*]}) = $(awk -v a="$loop_median" -v b="$cold_median" 'BEGIN {printf "%.2f", a / b}')x the cold invoke (target <= 0.5x)"
echo "  of which app-only build:  $(echo "${builds[*]}" | median) ms (median of 5; runs: ${builds[*]}; target 50 ms)"
echo "  unpack after the edit:    ${loop_unpack[*]} (target 30 ms; $(grep '^Unpacked' "$work/last.err" | sed 's/^Unpacked image [^ ]* //'))"

"$ocilambda" invoke --project "$work/app" --serve 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 100); do [ -s "$work/serve.out" ] && break; sleep 0.1; done
url=$(head -1 "$work/serve.out")
first=$(curl -s -o /dev/null -w '%{time_total}' -X POST --data-binary @"$event" "$url")
warm=()
for _ in $(seq "$warm_n"); do
	warm+=("$(curl -s -o /dev/null -w '%{time_total}' -X POST --data-binary @"$event" "$url" |
		awk '{printf "%.1f", $1 * 1000}')")
done
sorted=$(printf '%s\n' "${warm[@]}" | sort -n)
p50=$(echo "$sorted" | awk -v n="$warm_n" 'NR == int((n + 1) / 2)')
p95=$(echo "$sorted" | awk -v n="$warm_n" 'NR == int(n * 0.95 + 0.999)')
echo "--serve first request:      $(awk -v t="$first" 'BEGIN {printf "%.1f", t * 1000}') ms (cold start)"
echo "warm invoke latency (curl): p50 ${p50} ms, p95 ${p95} ms, min $(echo "$sorted" | head -1) ms, max $(echo "$sorted" | tail -1) ms ($warm_n requests)"
echo "cold starts while serving:  $(grep -c 'Init Duration' "$work/serve.err")"
