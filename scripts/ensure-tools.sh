# Sourced by scripts/test and scripts/demo: installs what ocilambda's tests and demo
# need on a fresh Debian machine, each only if its binary is missing:
# docker-registry (CNCF distribution), skopeo and umoci (independent OCI tools),
# python3 (stand-in base images, running handlers), uv (used by ocilambda), tar/gzip,
# openssl (CA, certificates and token signing for the push tests' TLS and auth registries),
# bubblewrap and curl (`ocilambda invoke` and its tests), passt (pasta) and slirp4netns (the
# private networks of `invoke`'s sandbox; its tests use both), and from PyPI moto's server
# (AWS for the deploy tests: Lambda, ECR, S3, IAM, STS) and the AWS CLI (bench/deploy.sh
# compares with it).
log() { printf '==> %s\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	SUDO=(sudo)
fi

apt_updated=false
apt_install() {
	if ! $apt_updated; then
		log "apt-get update"
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		apt_updated=true
	fi
	log "apt-get install $*"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# System packages, installed only if their binary is missing.
missing=()
for pair in docker-registry:docker-registry skopeo:skopeo umoci:umoci python3:python3 tar:tar gzip:gzip openssl:openssl bwrap:bubblewrap curl:curl pasta:passt slirp4netns:slirp4netns; do
	bin="${pair%%:*}" pkg="${pair#*:}"
	command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
	apt_install "${missing[@]}"
fi

# uv, from PyPI with pip, if missing.
USER_BIN="$(python3 -m site --user-base)/bin"
export PATH="$USER_BIN:$PATH"
if ! command -v uv >/dev/null 2>&1; then
	if ! python3 -m pip --version >/dev/null 2>&1; then
		apt_install python3-pip
	fi
	UV_SPEC='uv>=0.13.9,<0.14'
	log "pip install --user $UV_SPEC"
	python3 -m pip install --quiet --user "$UV_SPEC" </dev/null ||
		python3 -m pip install --quiet --user --break-system-packages "$UV_SPEC" </dev/null
	if command -v pyenv >/dev/null 2>&1; then
		pyenv rehash || true
	fi
	hash -r
	command -v uv >/dev/null 2>&1 || { echo "uv is still not on PATH ($PATH)" >&2; exit 1; }
fi

# moto's server and the AWS CLI, from PyPI with pip, each if missing.
pip_user_install() {
	log "pip install --user $*"
	python3 -m pip install --quiet --user "$@" </dev/null ||
		python3 -m pip install --quiet --user --break-system-packages "$@" </dev/null
	if command -v pyenv >/dev/null 2>&1; then
		pyenv rehash || true
	fi
	hash -r
}
if ! command -v moto_server >/dev/null 2>&1; then
	pip_user_install 'moto[server]>=5.1,<6'
	command -v moto_server >/dev/null 2>&1 || { echo "moto_server is still not on PATH ($PATH)" >&2; exit 1; }
fi
if ! command -v aws >/dev/null 2>&1; then
	pip_user_install 'awscli>=1.40,<2'
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
	export PATH="$HOME/.cargo/bin:$PATH"
fi

log "tools: $(command -v docker-registry skopeo umoci uv python3 moto_server aws cargo | tr '\n' ' ')"
log "$(uv --version); $(skopeo --version); $(umoci --version); $(cargo --version)"

