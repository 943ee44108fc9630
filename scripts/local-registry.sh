# Sourced by scripts/demo and bench/*.sh: start Debian's docker-registry on a free
# loopback port with testdata/registry/config.yml, storage in $1, and push the
# stand-in Lambda bases (testdata/base/make-base.sh). Sets REGISTRY=127.0.0.1:PORT
# and REGISTRY_PID; the caller's EXIT trap should `kill $REGISTRY_PID`.
# A TCP port free on 127.0.0.1 (for the registry here, moto in scripts/test-dist and bench).
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_local_registry() {
	local storage="$1" port
	port=$(free_port)
	REGISTRY="127.0.0.1:$port"
	REGISTRY_HTTP_ADDR="$REGISTRY" REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$storage" \
		docker-registry serve testdata/registry/config.yml >"$storage.log" 2>&1 &
	REGISTRY_PID=$!
	for _ in $(seq 100); do
		if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$REGISTRY/v2/', timeout=1)" 2>/dev/null; then
			bash testdata/base/make-base.sh "$REGISTRY" >&2
			return 0
		fi
		sleep 0.1
	done
	echo "docker-registry did not start; its log:" >&2
	cat "$storage.log" >&2
	return 1
}
