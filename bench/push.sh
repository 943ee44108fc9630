#!/usr/bin/env bash
# Push benchmark on loopback (figures, not assertions):
#   cold push of the FastAPI example next to `skopeo copy oci:... docker://...` of the
#   same (complete) layout, each into a fresh registry (target: ocilambda <= 0.7x skopeo);
#   no-op push (target <= 50 ms) next to a repeated skopeo copy;
#   bytes sent for an app-only change when the target has everything else
#   (target: app layer + config + manifest);
#   peak RSS pushing a layout with a 1 GiB layer (target <= 64 MiB).
# Usage: bench/push.sh [RUNS, default 5] [BIG_MB, default 1024]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/ensure-tools.sh
. bench/lib.sh
. scripts/local-registry.sh
command -v /usr/bin/time >/dev/null 2>&1 || apt_install time
runs=${1:-5}
big_mb=${2:-1024}

cargo build --release --locked --quiet
ocilambda=$PWD/target/release/ocilambda
work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}" "${REGISTRY_PID:-}"; do
		[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# The base registry (with the stand-in bases), then empty targets on demand.
start_local_registry "$work/base-registry" 2>/dev/null
base="$REGISTRY/lambda/python:3.11"
target_n=0
new_target() { # sets TARGET=127.0.0.1:PORT, an empty registry
	local port storage
	target_n=$((target_n + 1))
	storage="$work/target-$target_n"
	port=$(free_port)
	TARGET="127.0.0.1:$port"
	REGISTRY_HTTP_ADDR="$TARGET" REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$storage" \
		docker-registry serve testdata/registry/config.yml >"$storage.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do
		python3 -c "import urllib.request; urllib.request.urlopen('http://$TARGET/v2/', timeout=1)" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "docker-registry did not start" >&2
	return 1
}


cp -r examples/fastapi-app "$work/app"
export OCILAMBDA_CACHE_DIR="$work/cache"
# Complete, so that skopeo (which needs every blob) pushes the very same layout.
"$ocilambda" build "$work/app" --base "$base" --complete --quiet >/dev/null 2>&1
layout="$work/app/.ocilambda/image"
cp -r "$layout" "$work/complete" # for the large-layer run, after the rebuild below
size=$(du -sb "$layout/blobs" | cut -f1)
echo "image: FastAPI example, $(ls "$layout/blobs/sha256" | wc -l) blobs, $((size / 1024)) KiB"

ours=() theirs=()
for i in $(seq "$runs"); do
	new_target
	ours+=("$(OCILAMBDA_CACHE_DIR="$work/push-cache-$i" timed "$ocilambda" push "$TARGET/app" --project "$work/app")")
	new_target
	theirs+=("$(timed skopeo --insecure-policy copy --dest-tls-verify=false "oci:$layout:latest" "docker://$TARGET/app:latest")")
done
o=$(echo "${ours[*]}" | median)
t=$(echo "${theirs[*]}" | median)
echo "cold push, ocilambda:     ${o} ms (median of $runs; runs: ${ours[*]})"
echo "cold push, skopeo copy:   ${t} ms (median of $runs; runs: ${theirs[*]})"
python3 -c "print(f'ratio ocilambda/skopeo:    {$o/$t:.2f}')"

# No-op: the last target already has the image (pushed by skopeo just above; ocilambda
# pushes once more first so both tools look at their own repository).
"$ocilambda" push "$TARGET/noop" --project "$work/app" >/dev/null 2>&1
noop=() skop=()
for i in $(seq 10); do noop+=("$(timed "$ocilambda" push "$TARGET/noop" --project "$work/app")"); done
for i in $(seq 5); do skop+=("$(timed skopeo --insecure-policy copy --dest-tls-verify=false "oci:$layout:latest" "docker://$TARGET/app:latest")"); done
echo "no-op push, ocilambda:    $(echo "${noop[*]}" | median) ms (median of 10; runs: ${noop[*]})"
echo "no-op push, skopeo copy:  $(echo "${skop[*]}" | median) ms (median of 5; runs: ${skop[*]})"

# App-only change, pushed with an empty cache to a target that has the previous image.
echo "# benchmark edit" >>"$work/app/app/main.py"
"$ocilambda" build "$work/app" --base "$base" --quiet >/dev/null 2>&1
rm -rf "$work/empty-cache"
OCILAMBDA_CACHE_DIR="$work/empty-cache" "$ocilambda" push "$TARGET/noop" --project "$work/app" --json 2>/dev/null >"$work/app-only.json"
python3 - "$work/app-only.json" "$layout" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))
layout = sys.argv[2]
manifest = os.path.getsize(f"{layout}/blobs/sha256/{s['digest'][7:]}")
up = [b for b in s["blobs"] if b["action"] == "uploaded"]
print(f"app-only change: uploaded {s['uploaded_bytes']} B in {len(up)} blobs "
      f"({', '.join(b['kind'] + ' ' + str(b['size']) + ' B' for b in up)}) + manifest {manifest} B; "
      f"downloaded {s['downloaded_bytes']} B; skipped {sum(b['action'] == 'skipped' for b in s['blobs'])} blobs")
PY

# Peak RSS with a 1 GiB layer: the example's layout plus one layer of random bytes.
big="$work/big"
cp -r "$work/complete" "$big"
head -c "$((big_mb * 1024 * 1024))" /dev/urandom >"$big/blob.tmp"
python3 - "$big" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
h = hashlib.sha256()
with open(f"{d}/blob.tmp", "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
digest = "sha256:" + h.hexdigest()
os.rename(f"{d}/blob.tmp", f"{d}/blobs/sha256/{h.hexdigest()}")
index = json.load(open(f"{d}/index.json"))
old = index["manifests"][0]
m = json.load(open(f"{d}/blobs/sha256/{old['digest'][7:]}"))
# An uncompressed layer, so its diff_id is its digest and the config stays consistent
# (skopeo checks); registries do not look inside layers.
m["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest, "size": os.path.getsize(f"{d}/blobs/sha256/{h.hexdigest()}")})
config = json.load(open(f"{d}/blobs/sha256/{m['config']['digest'][7:]}"))
config["rootfs"]["diff_ids"].append(digest)
config.setdefault("history", []).append({"created_by": "bench: 1 GiB of random bytes"})
craw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
cd = hashlib.sha256(craw).hexdigest()
open(f"{d}/blobs/sha256/{cd}", "wb").write(craw)
m["config"]["digest"], m["config"]["size"] = "sha256:" + cd, len(craw)
raw = json.dumps(m, separators=(",", ":"), sort_keys=True).encode()
md = hashlib.sha256(raw).hexdigest()
open(f"{d}/blobs/sha256/{md}", "wb").write(raw)
old["digest"], old["size"] = "sha256:" + md, len(raw)
json.dump(index, open(f"{d}/index.json", "w"))
PY
new_target
/usr/bin/time -o "$work/rss" -f "%M %e" "$ocilambda" push "$TARGET/big" --layout "$big" >/dev/null 2>&1
read -r rss secs <"$work/rss"
echo "peak RSS, ${big_mb} MiB layer push: $((rss / 1024)) MiB (${secs} s)"
new_target
/usr/bin/time -o "$work/rss" -f "%M %e" skopeo --insecure-policy copy --dest-tls-verify=false "oci:$big:latest" "docker://$TARGET/big:latest" >"$work/skopeo-big.log" 2>&1 || { cat "$work/skopeo-big.log" >&2; exit 1; }
read -r rss secs <"$work/rss"
echo "peak RSS, skopeo copy of the same: $((rss / 1024)) MiB (${secs} s)"
