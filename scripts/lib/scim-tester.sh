#!/usr/bin/env bash
# Makes target/scim-venv, a Python virtual environment holding python-scim's conformance
# checker (scim2-tester, with scim2-client), and prints the path of its python. Installs
# from PyPI only when the pinned versions are not there yet.
set -euo pipefail
cd "$(dirname "$0")/../.."

TESTER_VERSION=0.5.2
CLIENT_VERSION=0.13.2
MODELS_VERSION=0.12.3
VENV="$PWD/target/scim-venv"
marker="$VENV/.scim2-tester-$TESTER_VERSION-client-$CLIENT_VERSION-models-$MODELS_VERSION"

if [ ! -f "$marker" ]; then
  echo "    installing scim2-tester $TESTER_VERSION into target/scim-venv" >&2
  rm -rf "$VENV"
  mkdir -p "$PWD/target"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 leaves venv support to a separate package.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq python3-venv >&2
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "scim2-tester==$TESTER_VERSION" "scim2-client[httpx2]==$CLIENT_VERSION" \
    "scim2-models==$MODELS_VERSION" >&2
  touch "$marker"
fi
echo "$VENV/bin/python"
