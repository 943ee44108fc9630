#!/usr/bin/env bash
# Deploy benchmark against moto's server and a local registry (figures, not assertions):
#   image function: a no-change deploy (build cache hit, HEADs, GetFunction; target
#   <= 150 ms) and a deploy after an app-only edit (target <= 300 ms);
#   zip function: the same two, and `--layer` no-change;
#   next to the AWS CLI sequence of uv's AWS Lambda guide for the same zip update
#   (`aws lambda update-function-code --zip-file` + `aws lambda wait function-updated`,
#   same endpoint; the zip itself already built), and the layer sequence
#   (publish-layer-version, update-function-configuration, wait, update-function-code, wait).
# moto answers at once and never leaves an update InProgress, so the figures are
# ocilambda's and the CLI's own costs, not Lambda's.
# Usage: bench/deploy.sh [RUNS, default 5]; OCILAMBDA_BIN=path to bench another binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/ensure-tools.sh
. bench/lib.sh
. scripts/local-registry.sh
runs=${1:-5}

if [ -z "${OCILAMBDA_BIN:-}" ]; then
	cargo build --release --locked --quiet
	OCILAMBDA_BIN=$PWD/target/release/ocilambda
fi
ocilambda=$OCILAMBDA_BIN
work=$(mktemp -d)
moto_pid=
cleanup() {
	for pid in "$moto_pid" "${REGISTRY_PID:-}"; do
		[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

start_local_registry "$work/registry" 2>/dev/null
base="$REGISTRY/lambda/python:3.11"
port=$(free_port)
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do
	python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null && break
	sleep 0.1
done

# A CI job's environment, with moto for AWS (fake keys: moto checks no signature).
export AWS_ACCESS_KEY_ID=AKIAOCILAMBDABENCH01 AWS_SECRET_ACCESS_KEY=bench-secret
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL=http://127.0.0.1:$port
export OCILAMBDA_CACHE_DIR="$work/cache" HOME="$work/home" DOCKER_CONFIG="$work/docker"
mkdir -p "$HOME" "$DOCKER_CONFIG"
cp -r examples/fastapi-app "$work/image-app"
cp -r examples/fastapi-app "$work/zip-app"

role=$(aws iam create-role --role-name bench --assume-role-policy-document \
	'{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}' \
	--query Role.Arn --output text)
aws lambda create-function --function-name bench-image --package-type Image \
	--code "ImageUri=$REGISTRY/bench@sha256:$(printf '0%.0s' $(seq 64))" --role "$role" >/dev/null
python3 -c "import zipfile; zipfile.ZipFile('$work/empty.zip', 'w').writestr('x.py', '')"
aws lambda create-function --function-name bench-zip --runtime python3.11 \
	--handler app.main.handler --zip-file "fileb://$work/empty.zip" --role "$role" >/dev/null

image() { "$ocilambda" deploy "$work/image-app" --function bench-image --repository "$REGISTRY/bench" --allow-non-ecr --base "$base" "$@"; }
zipfn() { "$ocilambda" deploy "$work/zip-app" --function bench-zip "$@"; }
edit() { echo "# edit $RANDOM" >>"$1/app/main.py"; }

series() { # LABEL CMD...: median of $runs runs of CMD
	local label=$1 times=()
	shift
	for _ in $(seq "$runs"); do times+=("$("$@")"); done
	printf '%-44s %6s ms (median of %s; runs: %s)\n' "$label" "$(echo "${times[*]}" | median)" "$runs" "${times[*]}"
}
image_edit() { edit "$work/image-app"; timed image; }
zip_edit() { edit "$work/zip-app"; timed zipfn; }
zip_layer_edit() { edit "$work/zip-app"; timed zipfn --layer bench-deps; }
cli_zip_update() {
	local t0 t1
	t0=$(date +%s%N)
	aws lambda update-function-code --function-name bench-zip \
		--zip-file "fileb://$work/zip-app/.ocilambda/package.zip" >/dev/null
	aws lambda wait function-updated --function-name bench-zip
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}
cli_layer_update() {
	local t0 t1 arn
	t0=$(date +%s%N)
	arn=$(aws lambda publish-layer-version --layer-name bench-cli-deps \
		--zip-file "fileb://$work/zip-app/.ocilambda/layer_content.zip" \
		--compatible-runtimes python3.11 --compatible-architectures x86_64 \
		--query LayerVersionArn --output text)
	aws lambda update-function-configuration --function-name bench-zip --layers "$arn" >/dev/null
	aws lambda wait function-updated --function-name bench-zip
	aws lambda update-function-code --function-name bench-zip \
		--zip-file "fileb://$work/zip-app/.ocilambda/app.zip" >/dev/null
	aws lambda wait function-updated --function-name bench-zip
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}

echo "ocilambda: $ocilambda; $(aws --version 2>&1); moto $(python3 -c 'import moto; print(moto.__version__)')"
image >/dev/null 2>&1 # first deploy: build, push, update
series "image: no-change deploy (target <= 150)" timed image
series "image: app-only edit deploy (target <= 300)" image_edit
zipfn >/dev/null 2>&1
series "zip: no-change deploy" timed zipfn
series "zip: app-only edit deploy (zip + update)" zip_edit
series "aws CLI: update-function-code + wait" cli_zip_update
zipfn --layer bench-deps >/dev/null 2>&1
series "zip --layer: no-change deploy" timed zipfn --layer bench-deps
series "zip --layer: app-only edit deploy" zip_layer_edit
series "aws CLI: layer publish + config + code" cli_layer_update
