# Makes sure `prometheus` and `promtool` are on PATH, installing Debian's prometheus package
# (it ships both) when either is missing.
#
# The package would start a Prometheus service on :9090 at install: the install runs under
# a policy-rc.d that forbids starting services, and the unit it enables is disabled again,
# so nothing is left running. The tests start their own Prometheus on a free port.

install_prometheus_package() {
  echo "prometheus or promtool not found; installing Debian's prometheus package" >&2
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install it here (needs root and apt-get)" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
  fi
  local status=0
  # Recommends would bring prometheus-node-exporter, another daemon the tests do not need.
  if ! apt-get install -y -qq --no-install-recommends prometheus >&2; then
    apt-get update -qq >&2 || true
    apt-get install -y -qq --no-install-recommends prometheus >&2 || status=$?
  fi
  [ -n "$made_policy" ] && rm -f "$policy"
  if command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    else
      systemctl disable prometheus.service >/dev/null 2>&1 || true
    fi
  fi
  return "$status"
}

ensure_prometheus() {
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    install_prometheus_package || return 1
  fi
  echo "==> $(prometheus --version 2>&1 | head -n 1)" >&2
}
