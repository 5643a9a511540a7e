#!/bin/sh
# Debian's BART is the reference for the ESPIRiT and l1 cross-checks in the tests.
set -e
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bart >/dev/null
bart version
