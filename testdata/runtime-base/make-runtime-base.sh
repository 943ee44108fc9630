#!/usr/bin/env bash
# Build a *runnable* stand-in for public.ecr.aws/lambda/python:3.11 with
# independent tools and push it to a test registry, for `ocilambda invoke`'s tests
# and benchmark. Unlike testdata/base/make-base.sh (whose python is a stub), this
# image really runs a Lambda function:
#
#   layer 1  an OS tree assembled from Debian packages (`apt-get download` of
#            python3.11-minimal, libpython3.11-stdlib, libc6, dash, ... then
#            `dpkg -x`), stdlib bytecode compiled by that python itself;
#   layer 2  the Lambda runtime bits: /var/lang/bin/python3.11, the real
#            /lambda-entrypoint.sh logic, /var/runtime/bootstrap (+ bootstrap.py)
#            running AWS's awslambdaric 4.2.2 from PyPI, the /var/task dir;
#   layer 3  whiteouts, as a later layer of a real base may carry: deletes
#            /etc/ocilambda-fixture/removed-by-whiteout and makes
#            /opt/ocilambda-fixture/opaque opaque (its lower `old` file hidden,
#            a new `new` file in its place).
#
# Entrypoint ["/lambda-entrypoint.sh"], WorkingDir /var/task and the Lambda
# environment variables, as the real image has. Host architecture only (the
# Debian packages are the host's).
#
# Usage: testdata/runtime-base/make-runtime-base.sh REGISTRY_HOSTPORT [CACHE_DIR]
#
# Pushes REGISTRY/runnable/lambda/python:3.11 (a single-platform OCI manifest;
# the repository name ends in lambda/python so `ocilambda build` infers 3.11).
# With CACHE_DIR, the OCI layout is kept there, keyed by this script's hash and
# the architecture, and reused: later runs only push (~1 s instead of ~30 s).
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || [ -z "$1" ]; then
	echo "usage: $0 REGISTRY_HOSTPORT [CACHE_DIR]" >&2
	exit 2
fi
REGISTRY="$1"
CACHE_DIR="${2:-}"
REPO="runnable/lambda/python:3.11"

for tool in apt-get dpkg umoci skopeo python3 uv bwrap sha256sum; do
	command -v "$tool" >/dev/null || { echo "$0: $tool not found on PATH" >&2; exit 1; }
done

case "$(uname -m)" in
x86_64) ARCH=amd64 PLATFORM=x86_64-manylinux2014 ;;
aarch64) ARCH=arm64 PLATFORM=aarch64-manylinux2014 ;;
*) echo "$0: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

push() { # LAYOUT
	skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
		"oci:$1:3.11" "docker://$REGISTRY/$REPO"
	echo "make-runtime-base.sh: pushed $REGISTRY/$REPO ($ARCH)" >&2
}

KEY="$(sha256sum "$0" | cut -c1-16)-$ARCH"
if [ -n "$CACHE_DIR" ] && [ -f "$CACHE_DIR/$KEY/layout/index.json" ]; then
	push "$CACHE_DIR/$KEY/layout"
	exit 0
fi

CREATED="2024-01-01T00:00:00Z"
EPOCH=1704067200 # $CREATED as a Unix time
PYVER=3.11
AWSLAMBDARIC=4.2.2
# What python3.11 needs to start and import the stdlib (ssl, sqlite3, ctypes,
# decimal, ...), plus a shell for the entrypoint and libstdc++ for awslambdaric's
# C++ runtime client.
PACKAGES=(
	python3.11-minimal libpython3.11-minimal libpython3.11-stdlib media-types
	libc6 libgcc-s1 libstdc++6 dash zlib1g libexpat1 libffi8 libssl3 libbz2-1.0
	liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1
	libdb5.3 libgdbm6 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3
	libkrb5support0 libcom-err2 libkeyutils1
)
ENV_VARS=(
	"LANG=en_US.UTF-8"
	"TZ=:/etc/localtime"
	"PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
	"LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
	"LAMBDA_TASK_ROOT=/var/task"
	"LAMBDA_RUNTIME_DIR=/var/runtime"
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ocilambda-runtime-base.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
OS="$WORK/os" RT="$WORK/runtime" WH="$WORK/whiteouts"

# Layer 1: the OS. apt-get download writes into the current directory and needs
# no root; dpkg -x unpacks without running maintainer scripts, so what those
# would do (the /bin/sh link, passwd) is done here.
mkdir -p "$WORK/debs" "$OS"
(cd "$WORK/debs" && apt-get download -qq "${PACKAGES[@]}" 2>&1 | grep -v 'unsandboxed as root' >&2 || true)
ls "$WORK/debs"/*.deb >/dev/null
for deb in "$WORK/debs"/*.deb; do dpkg -x "$deb" "$OS"; done
ln -sfn dash "$OS/bin/sh"
mkdir -p "$OS/tmp" "$OS/proc" "$OS/dev" "$OS/var/runtime" "$OS/etc/ocilambda-fixture" \
	"$OS/opt/ocilambda-fixture/opaque"
chmod 1777 "$OS/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nsbx_user1051:x:993:990::/home/sbx_user1051:/sbin/nologin\n' >"$OS/etc/passwd"
printf 'root:x:0:\nsbx_user1051:x:990:\n' >"$OS/etc/group"
ln -sf /usr/share/zoneinfo/UTC "$OS/etc/localtime"
echo "deleted by a whiteout in layer 3" >"$OS/etc/ocilambda-fixture/removed-by-whiteout"
echo "kept" >"$OS/etc/ocilambda-fixture/kept"
echo "hidden by an opaque whiteout in layer 3" >"$OS/opt/ocilambda-fixture/opaque/old"

# Layer 2: the runtime. The entrypoint keeps the logic of the real image's
# /lambda-entrypoint.sh (the handler is the only argument; the runtime emulator
# only when no Runtime API is given), and the bootstrap the shape of the real
# /var/runtime/bootstrap: a shell script exec-ing python on bootstrap.py, which
# sets sys.path as the managed runtime does and hands over to awslambdaric.
mkdir -p "$RT/var/lang/bin" "$RT/var/runtime" "$RT/var/task"
ln -s /usr/bin/python$PYVER "$RT/var/lang/bin/python$PYVER"
ln -s python$PYVER "$RT/var/lang/bin/python3"
cat >"$RT/lambda-entrypoint.sh" <<'EOF'
#!/bin/sh
# Stand-in for the AWS Lambda base image entrypoint (same logic).
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie $RUNTIME_ENTRYPOINT
else
  exec $RUNTIME_ENTRYPOINT
fi
EOF
cat >"$RT/var/runtime/bootstrap" <<EOF
#!/bin/sh
# Stand-in for the Lambda Python $PYVER runtime bootstrap.
export AWS_EXECUTION_ENV=AWS_Lambda_python$PYVER
if [ -z "\$AWS_LAMBDA_EXEC_WRAPPER" ]; then
  exec /var/lang/bin/python$PYVER /var/runtime/bootstrap.py
else
  exec "\$AWS_LAMBDA_EXEC_WRAPPER" /var/lang/bin/python$PYVER /var/runtime/bootstrap.py
fi
EOF
cat >"$RT/var/runtime/bootstrap.py" <<EOF
"""Stand-in for the Lambda Python $PYVER runtime's bootstrap.py: import paths as the
managed runtime sets them (task root, then /opt/python for layers), then the loop of
AWS's Runtime Interface Client (awslambdaric $AWSLAMBDARIC)."""
import os
import site
import sys

OPT_SITE = "/opt/python/lib/python%d.%d/site-packages" % sys.version_info[:2]


def main():
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    if "PYTHONPATH" not in os.environ:
        sys.path[0:0] = [OPT_SITE, "/opt/python"]
    sys.path.insert(0, task_root)
    site.addsitedir(task_root)
    if "PYTHONPATH" not in os.environ:
        os.environ["PYTHONPATH"] = os.environ["LAMBDA_RUNTIME_DIR"]

    from awslambdaric import bootstrap
    from awslambdaric.lambda_runtime_client import LambdaRuntimeClient

    handler = sys.argv[1] if len(sys.argv) > 1 else os.environ["_HANDLER"]
    bootstrap.run(handler, LambdaRuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"]))


if __name__ == "__main__":
    main()
EOF
chmod 0755 "$RT/lambda-entrypoint.sh" "$RT/var/runtime/bootstrap"
uv pip install --quiet --no-cache --target "$RT/var/runtime" --python-version $PYVER \
	--python-platform "$PLATFORM" "awslambdaric==$AWSLAMBDARIC" </dev/null

# Bytecode, compiled by the image's own python (in a sandbox with the OS tree as
# its root), so imports at cold start do not compile the stdlib each time: the
# rootfs is read-only at run time and nothing could be written back.
# unchecked-hash pycs do not depend on the mtimes the layers keep.
bwrap --bind "$OS" / --bind "$RT/var/runtime" /var/runtime --proc /proc --dev /dev \
	--tmpfs /dev/shm --tmpfs /tmp --clearenv --setenv PATH /usr/bin:/bin \
	/usr/bin/python$PYVER -m compileall -q -j0 --invalidation-mode unchecked-hash \
	/usr/lib/python$PYVER /var/runtime >/dev/null
rmdir "$OS/var/runtime" "$OS/var" 2>/dev/null || true

# Layer 3: whiteouts (OCI image-spec "Whiteouts": `.wh.NAME` deletes NAME from the
# layers below; `.wh..wh..opq` hides everything below in its directory).
mkdir -p "$WH/etc/ocilambda-fixture" "$WH/opt/ocilambda-fixture/opaque"
: >"$WH/etc/ocilambda-fixture/.wh.removed-by-whiteout"
: >"$WH/opt/ocilambda-fixture/opaque/.wh..wh..opq"
echo "added above an opaque whiteout" >"$WH/opt/ocilambda-fixture/opaque/new"

# Layer tarballs by python's tarfile, as in make-base.sh: relative sorted entries
# owned by root:root with a fixed mtime, so no `--rootless` is needed.
MKTAR="$WORK/mktar.py"
cat >"$MKTAR" <<'PY'
import os, sys, tarfile

src, out, mtime = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            info = tar.gettarinfo(path, os.path.relpath(path, src))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = mtime
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
PY
LAYOUT="$WORK/layout"
IMG="$LAYOUT:3.11"
umoci init --layout "$LAYOUT"
umoci new --image "$IMG"
umoci config --image "$IMG" --no-history --created "$CREATED" --architecture "$ARCH" --os linux
for layer in os runtime whiteouts; do
	python3 "$MKTAR" "$WORK/$layer" "$WORK/$layer.tar" "$EPOCH"
	umoci raw add-layer --image "$IMG" --history.created "$CREATED" \
		--history.created_by "ocilambda runnable stand-in: $layer layer" "$WORK/$layer.tar"
done
env_args=()
for e in "${ENV_VARS[@]}"; do env_args+=(--config.env "$e"); done
umoci config --image "$IMG" --created "$CREATED" --history.created "$CREATED" \
	--history.created_by "ocilambda runnable stand-in config" \
	--clear config.env --clear config.cmd --clear config.entrypoint "${env_args[@]}" \
	--config.entrypoint /lambda-entrypoint.sh --config.workingdir /var/task \
	--config.label "org.opencontainers.image.title=ocilambda runnable stand-in lambda/python:$PYVER"
umoci gc --layout "$LAYOUT"

if [ -n "$CACHE_DIR" ]; then
	# Renamed into place whole, so a concurrent or interrupted run never leaves a
	# half-written layout behind for the next one to reuse.
	mkdir -p "$CACHE_DIR"
	staged="$(mktemp -d "$CACHE_DIR/.staging.XXXXXX")"
	mv "$LAYOUT" "$staged/layout"
	mv -T "$staged" "$CACHE_DIR/$KEY" 2>/dev/null || rm -rf "$staged"
	LAYOUT="$CACHE_DIR/$KEY/layout"
fi
push "$LAYOUT"
