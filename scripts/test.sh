#!/usr/bin/env bash
# Install what the tests need on Debian (nginx, wrk, curl, pebble, openssl, icecast2, h2load, sshd, apache2,
# prosody, htpasswd, libnghttp2-dev, libssl-dev, chromium, chromium-driver, logrotate; .venv with the test extras), then run the suite: bash scripts/test.sh
# [pytest args].  Exits with pytest's code.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
. scripts/lib.sh
PYTHON=${PYTHON:-python3}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"  # nginx lives in /usr/sbin

# The nginx package starts its default site on port 80 where a service manager lets it.
# The tests and bench/ run nginx with their own configs; leave port 80 free.  Without
# systemd, or with a policy-rc.d that refused the start, there is nothing to stop.
stop_nginx_service() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now nginx >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        as_root service nginx stop >/dev/null 2>&1 || true
    fi
    if [ -s /run/nginx.pid ]; then  # started some other way: the package's pid file
        as_root nginx -s stop >/dev/null 2>&1 || true
    fi
}

# The same for the apache2 package (tests/integration/test_apache_differential.py runs
# its own apache2 with a temp ServerRoot on a test port).
stop_apache_service() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now apache2 >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        as_root service apache2 stop >/dev/null 2>&1 || true
    fi
}

# The same for the openssh-server package: the tests run their own sshd on a test port.
stop_sshd_service() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now ssh >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        as_root service ssh stop >/dev/null 2>&1 || true
    fi
    if [ -s /run/sshd.pid ]; then
        as_root kill "$(cat /run/sshd.pid)" >/dev/null 2>&1 || true
    fi
}

# The same for the prosody package: the tests run their own prosody (its own config and port).
stop_prosody_service() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now prosody >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        as_root service prosody stop >/dev/null 2>&1 || true
    fi
    if [ -s /run/prosody/prosody.pid ]; then
        as_root kill "$(cat /run/prosody/prosody.pid)" >/dev/null 2>&1 || true
    fi
}

missing=()
declare -A package_of=([h2load]=nghttp2-client [sshd]=openssh-server [htpasswd]=apache2-utils [chromedriver]=chromium-driver)  # the command's package, where the names differ
# chromium and chromedriver: the admin dashboard in a headless browser (test_admin_dashboard.py)
# logrotate: contrib/logrotate run under load (test_logrotate.py)
for tool in nginx wrk curl pebble openssl icecast2 h2load sshd prosody htpasswd chromium chromedriver apache2 logrotate; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]:-$tool}")
done
# The header HTTP/2 on libnghttp2 is built with (setup.py, src/porch/server/ngh2.pyx);
# the suite runs every HTTP/2 test on it and on the pure-Python h2 engine.
[ -e /usr/include/nghttp2/nghttp2.h ] || missing+=(libnghttp2-dev)
# ... and the one TLS records are read and written with (src/porch/server/tls_transport.pyx)
[ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
# nss_wrapper: a hosts file of the test's own for upstream names (test_upstream_pools.py)
ls /usr/lib/*/libnss_wrapper.so >/dev/null 2>&1 || missing+=(libnss-wrapper)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)"
    apt_install "${missing[@]}"
    if [[ " ${missing[*]} " == *" nginx "* ]]; then
        stop_nginx_service
    fi
    if [[ " ${missing[*]} " == *" apache2 "* ]]; then
        stop_apache_service
    fi
    if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
        stop_sshd_service
    fi
    if [[ " ${missing[*]} " == *" prosody "* ]]; then
        stop_prosody_service
    fi
fi
# sshd started by root needs its privilege separation directory, which the package's
# service start would create (the tests run their own sshd, as the user running them).
if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then
    mkdir -p -m 0755 /run/sshd
fi

ensure_venv '.[test]' test
# -q comes from addopts in pyproject.toml: a second one would hide the "N passed" line.
exec .venv/bin/pytest "$@"
