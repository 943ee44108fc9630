#!/usr/bin/env bash
# Zip benchmark for the FastAPI example (figures, not assertions), release binary:
#   `ocilambda zip` cold (fresh ocilambda cache; uv's own download cache stays warm),
#   warm (no change), after an app-only edit, and the same for `--layer`;
#   next to the seed's manual recipe, run here on the same project and uv cache:
#   uv export + uv pip install --target + zip -r -X (no cache of its own: every run is cold).
# Usage: bench/zip.sh [RUNS, default 5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/ensure-tools.sh
. bench/lib.sh
if ! command -v zip >/dev/null 2>&1; then
	apt_install zip
fi
runs=${1:-5}

cargo build --release --locked --quiet
ocilambda=$PWD/target/release/ocilambda
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r examples/fastapi-app "$work/app"
cp -r examples/fastapi-app "$work/manual"
export OCILAMBDA_CACHE_DIR="$work/cache"

series() { # LABEL CMD...: median of $runs runs of CMD
	local label=$1 times=()
	shift
	for _ in $(seq "$runs"); do times+=("$("$@")"); done
	printf '%-34s %6s ms (median of %s; runs: %s)\n' "$label" "$(echo "${times[*]}" | median)" "$runs" "${times[*]}"
}

# The seed's recipe ("Deploying a zip archive"), for Python 3.11 like the example.
manual() {
	(
		cd "$work/manual"
		rm -rf packages package.zip requirements.txt
		uv export --frozen --no-dev --no-editable --quiet -o requirements.txt
		uv pip install --quiet \
			--no-installer-metadata \
			--no-compile-bytecode \
			--python-platform x86_64-manylinux2014 \
			--python-version 3.11 \
			--target packages \
			-r requirements.txt
		(cd packages && zip -q -r -X ../package.zip .)
		zip -q -r -X package.zip app
	)
}
cold() { rm -rf "$OCILAMBDA_CACHE_DIR"; timed "$ocilambda" zip "$work/app" "$@"; }
warm() { timed "$ocilambda" zip "$work/app" "$@"; }
edit() {
	echo "# edit $RANDOM" >>"$work/app/app/main.py"
	timed "$ocilambda" zip "$work/app" "$@"
}

echo "uv: $(uv --version) at $(command -v uv); $(zip -v | sed -n 2p | sed 's/^ *//')"
if head -c2 "$(command -v uv)" | grep -q '#!'; then
	echo "note: uv on PATH is a wrapper script (e.g. a pyenv shim); ocilambda then runs"
	echo "      \`uv --version\` on every zip to key its cache, which adds its start-up time."
fi
manual >/dev/null 2>&1 # warm uv's download cache for both sides
"$ocilambda" zip "$work/app" >/dev/null 2>&1

series "seed recipe (export+install+zip)" timed manual
series "ocilambda zip, cold" cold
series "ocilambda zip, warm (no change)" warm
series "ocilambda zip, app-only edit" edit
series "ocilambda zip --layer, cold" cold --layer
series "ocilambda zip --layer, warm" warm --layer
series "ocilambda zip --layer, app edit" edit --layer

manual >/dev/null 2>&1
first=$(sha256sum "$work/manual/package.zip" | cut -c1-12)
sleep 1
manual >/dev/null 2>&1
second=$(sha256sum "$work/manual/package.zip" | cut -c1-12)
"$ocilambda" zip "$work/app" --output "$work/a.zip" >/dev/null 2>&1
rm -rf "$OCILAMBDA_CACHE_DIR"
"$ocilambda" zip "$work/app" --output "$work/b.zip" >/dev/null 2>&1
printf '%-34s %s (%s bytes); two runs: %s %s\n' "seed recipe package.zip" \
	"$(du -h "$work/manual/package.zip" | cut -f1)" "$(stat -c %s "$work/manual/package.zip")" "$first" "$second"
printf '%-34s %s (%s bytes); two runs: %s %s\n' "ocilambda package.zip" \
	"$(du -h "$work/a.zip" | cut -f1)" "$(stat -c %s "$work/a.zip")" \
	"$(sha256sum "$work/a.zip" | cut -c1-12)" "$(sha256sum "$work/b.zip" | cut -c1-12)"
rm -rf "$OCILAMBDA_CACHE_DIR"
/usr/bin/time -f %M -o "$work/rss" "$ocilambda" zip "$work/app" >/dev/null 2>&1
echo "peak RSS, cold zip:                 $(($(cat "$work/rss") / 1024)) MiB"
/usr/bin/time -f %M -o "$work/rss" "$ocilambda" zip "$work/app" >/dev/null 2>&1
echo "peak RSS, warm zip:                 $(($(cat "$work/rss") / 1024)) MiB"
