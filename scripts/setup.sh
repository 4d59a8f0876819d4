#!/usr/bin/env bash
# Install everything VED needs, idempotently: Debian packages (when missing),
# a virtual environment at .venv/ and the pinned Python packages.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}

say() { printf '[setup] %s\n' "$*" >&2; }

install_system_packages() {
    local wanted missing=()
    wanted=$(grep -v -E '^\s*(#|$)' scripts/apt-packages.txt)
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            say "missing Debian packages: ${missing[*]}"
            say "cannot install them without root; run: sudo apt-get install -y ${missing[*]}"
            say "continuing: the microphone, the window or some tests may not work until they are installed"
            return 0
        fi
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
        say "apt-get could not install: ${missing[*]} (see the messages above); continuing"
    fi
}

create_venv() {
    if [ ! -x .venv/bin/python ]; then
        say "creating the virtual environment in .venv/"
        if ! "$PYTHON" -m venv .venv 2>/dev/null; then
            say "python venv module missing; installing python3-venv"
            rm -rf .venv
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            "$PYTHON" -m venv .venv
        fi
    fi
}

install_python_packages() {
    local stamp=.venv/.requirements.sha256 want
    want=$(sha256sum requirements.txt | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    say "installing Python packages from requirements.txt (torch is large: about a minute)"
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -r requirements.txt >&2
    echo "$want" > "$stamp"
}

install_system_packages
create_venv
install_python_packages
say "ready: $ROOT/.venv"
