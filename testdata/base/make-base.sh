#!/usr/bin/env bash
# Build stand-in AWS Lambda Python base images with independent tools
# (umoci for the images, python3 for layer tarballs and image indexes,
# skopeo to push) and push them over plain HTTP to a test registry.
#
# Usage: testdata/base/make-base.sh REGISTRY_HOSTPORT
#
# Pushes, for X.Y in 3.11 3.12 3.13:
#   REGISTRY/lambda/python:X.Y            OCI image index: linux/amd64 + linux/arm64/v8
# and additionally:
#   REGISTRY/lambda/python-docker:3.11    single-arch amd64 image, Docker v2 schema 2 media types
#   REGISTRY/lambda/python-arm64only:3.11 OCI image index with only linux/arm64/v8
#
# Each per-arch image mimics public.ecr.aws/lambda/python:X.Y: two gzip layers,
# Entrypoint ["/lambda-entrypoint.sh"], WorkingDir /var/task, the Lambda
# environment variables, and a few files (including /etc/shadow with mode 0600,
# as real base images have). Timestamps and ownership are fixed, so the
# resulting digests are the same on every run, as root or not; pushing again is
# harmless.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
	echo "usage: $0 REGISTRY_HOSTPORT" >&2
	exit 2
fi
REGISTRY="$1"

for tool in umoci skopeo python3; do
	command -v "$tool" >/dev/null || { echo "$0: $tool not found on PATH" >&2; exit 1; }
done

PY_VERSIONS=(3.11 3.12 3.13)
ARCHES=(amd64 arm64)
CREATED="2024-01-01T00:00:00Z"
EPOCH=1704067200 # $CREATED as a Unix time
ENV_VARS=(
	"LANG=en_US.UTF-8"
	"TZ=:/etc/localtime"
	"PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
	"LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
	"LAMBDA_TASK_ROOT=/var/task"
	"LAMBDA_RUNTIME_DIR=/var/runtime"
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ocilambda-base.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LAYOUT="$WORK/layout"
umoci init --layout "$LAYOUT"

# Layer tarballs are written by python's tarfile rather than `umoci insert`, so
# that entries are relative ("etc/shadow"; no "/" entry), sorted, owned by
# root:root whoever runs this, and stamped with a fixed mtime: reproducible
# digests, and no `--rootless` needed. `umoci raw add-layer` gzips them.
MKTAR="$WORK/mktar.py"
cat >"$MKTAR" <<'PY'
import os, sys, tarfile

src, out, mtime = sys.argv[1], sys.argv[2], int(sys.argv[3])


def add(tar, path, arcname):
    info = tar.gettarinfo(path, arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = mtime
    if info.isreg():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            arc = os.path.relpath(path, src)
            if os.path.isdir(path) and not os.path.islink(path):
                arc += "/"
            add(tar, path, arc)
PY

# Layer 1: a tiny "operating system" layer, different per architecture.
make_os_tree() { # DIR ARCH
	local d="$1" arch="$2"
	mkdir -p "$d/etc" "$d/bin" "$d/lib64" "$d/usr/bin" "$d/usr/lib64" "$d/usr/local/bin" \
		"$d/opt/bin" "$d/opt/lib" "$d/tmp"
	chmod 1777 "$d/tmp"
	cat >"$d/etc/os-release" <<-EOF
		NAME="ocilambda stand-in base"
		ID=ocilambda-stand-in
		VERSION_ID=1
		PRETTY_NAME="ocilambda stand-in AWS Lambda base ($arch)"
	EOF
	printf 'root:x:0:0:root:/root:/bin/bash\nsbx_user1051:x:993:990::/home/sbx_user1051:/sbin/nologin\n' >"$d/etc/passwd"
	printf 'root:x:0:\nsbx_user1051:x:990:\n' >"$d/etc/group"
	printf 'root:*:19000:0:99999:7:::\nsbx_user1051:!!:19000::::::\n' >"$d/etc/shadow"
	chmod 0600 "$d/etc/shadow"
	ln -s /usr/share/zoneinfo/UTC "$d/etc/localtime"
	# The architecture marker: makes the amd64 and arm64 layers differ.
	printf '%s\n' "$arch" >"$d/etc/ocilambda-stand-in-arch"
}

# Layer 2: the Lambda Python runtime bits.
make_runtime_tree() { # DIR PYVER ARCH
	local d="$1" pyver="$2" arch="$3"
	mkdir -p "$d/var/lang/bin" "$d/var/lang/lib/python$pyver/site-packages" \
		"$d/var/runtime" "$d/var/task"
	cat >"$d/lambda-entrypoint.sh" <<-'EOF'
		#!/bin/sh
		# Stand-in for the AWS Lambda base image entrypoint.
		if [ $# -ne 1 ]; then
		  echo "entrypoint requires the handler name to be the first argument" 1>&2
		  exit 142
		fi
		export _HANDLER="$1"

		RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
		if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
		  exec /usr/local/bin/aws-lambda-rie $RUNTIME_ENTRYPOINT "$@"
		else
		  exec $RUNTIME_ENTRYPOINT "$@"
		fi
	EOF
	chmod 0755 "$d/lambda-entrypoint.sh"
	cat >"$d/var/runtime/bootstrap" <<-EOF
		#!/bin/sh
		# Stand-in for the Lambda Python $pyver runtime bootstrap ($arch).
		echo "ocilambda stand-in bootstrap: python $pyver on $arch, handler \$_HANDLER" 1>&2
		exit 1
	EOF
	chmod 0755 "$d/var/runtime/bootstrap"
	cat >"$d/var/lang/bin/python$pyver" <<-EOF
		#!/bin/sh
		echo "ocilambda stand-in: no real python$pyver in this image" 1>&2
		exit 1
	EOF
	chmod 0755 "$d/var/lang/bin/python$pyver"
	ln -s "python$pyver" "$d/var/lang/bin/python3"
	printf '%s\n' "$pyver" >"$d/var/runtime/ocilambda-stand-in-python-version"
}

for pyver in "${PY_VERSIONS[@]}"; do
	for arch in "${ARCHES[@]}"; do
		tag="$pyver-$arch"
		img="$LAYOUT:$tag"
		src="$WORK/src/$tag"
		make_os_tree "$src/os" "$arch"
		make_runtime_tree "$src/runtime" "$pyver" "$arch"
		python3 "$MKTAR" "$src/os" "$src/os.tar" "$EPOCH"
		python3 "$MKTAR" "$src/runtime" "$src/runtime.tar" "$EPOCH"

		umoci new --image "$img"
		umoci config --image "$img" --no-history \
			--created "$CREATED" --architecture "$arch" --os linux
		umoci raw add-layer --image "$img" \
			--history.created "$CREATED" --history.created_by "ocilambda stand-in os layer" \
			"$src/os.tar"
		umoci raw add-layer --image "$img" \
			--history.created "$CREATED" --history.created_by "ocilambda stand-in python $pyver runtime layer" \
			"$src/runtime.tar"
		env_args=()
		for e in "${ENV_VARS[@]}"; do env_args+=(--config.env "$e"); done
		umoci config --image "$img" \
			--created "$CREATED" --history.created "$CREATED" \
			--history.created_by "ocilambda stand-in config" \
			--clear config.env --clear config.cmd --clear config.entrypoint \
			"${env_args[@]}" \
			--config.entrypoint /lambda-entrypoint.sh \
			--config.workingdir /var/task \
			--config.label "org.opencontainers.image.title=ocilambda stand-in lambda/python:$pyver"
	done
done
umoci gc --layout "$LAYOUT"

# Write image indexes into the layout (umoci only makes single manifests):
#   NAME=TAG1,TAG2,... -> an index tagged NAME over the manifests tagged TAGn.
python3 - "$LAYOUT" "3.11=3.11-amd64,3.11-arm64" "3.12=3.12-amd64,3.12-arm64" \
	"3.13=3.13-amd64,3.13-arm64" "3.11-arm64only=3.11-arm64" <<'PY'
import hashlib, json, os, sys

layout = sys.argv[1]
REF = "org.opencontainers.image.ref.name"
with open(os.path.join(layout, "index.json")) as f:
    top = json.load(f)
by_tag = {m["annotations"][REF]: m for m in top["manifests"]}


def read_blob(digest):
    with open(os.path.join(layout, "blobs", *digest.split(":", 1))) as f:
        return json.load(f)


def platform(tag):
    config = read_blob(read_blob(by_tag[tag]["digest"])["config"]["digest"])
    p = {"architecture": config["architecture"], "os": config["os"]}
    if p["architecture"] == "arm64":
        p["variant"] = "v8"  # as public.ecr.aws/lambda/python's index has
    return p


for spec in sys.argv[2:]:
    name, tags = spec.split("=", 1)
    manifests = []
    for tag in tags.split(","):
        d = by_tag[tag]
        manifests.append({"mediaType": d["mediaType"], "digest": d["digest"],
                          "size": d["size"], "platform": platform(tag)})
    index = {"schemaVersion": 2,
             "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": manifests}
    blob = json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"
    digest = hashlib.sha256(blob).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(blob)
    by_tag[name] = {"mediaType": index["mediaType"], "digest": "sha256:" + digest,
                    "size": len(blob), "annotations": {REF: name}}

top["manifests"] = [by_tag[t] for t in sorted(by_tag)]
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump(top, f, indent=2)
PY

push() { # SRC_TAG DEST_REPO:TAG [extra skopeo copy args...]
	local src="$1" dest="$2"
	shift 2
	skopeo --insecure-policy copy --quiet --dest-tls-verify=false "$@" \
		"oci:$LAYOUT:$src" "docker://$REGISTRY/$dest"
}
for pyver in "${PY_VERSIONS[@]}"; do
	push "$pyver" "lambda/python:$pyver" --all
done
push 3.11-amd64 lambda/python-docker:3.11 --format v2s2
push 3.11-arm64only lambda/python-arm64only:3.11 --all

echo "make-base.sh: pushed $REGISTRY/lambda/python:{3.11,3.12,3.13}," \
	"$REGISTRY/lambda/python-docker:3.11, $REGISTRY/lambda/python-arm64only:3.11" >&2
