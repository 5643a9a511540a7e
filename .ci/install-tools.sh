#!/bin/sh
# Debian packages the tests compare against or drive: BART (ESPIRiT and l1 cross-checks) and
# Chromium (the HTML report must render with every image loaded).
set -e
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bart chromium >/dev/null
bart version
chromium --version
