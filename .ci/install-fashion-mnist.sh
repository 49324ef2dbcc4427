#!/usr/bin/env bash
# Install Debian's dataset-fashion-mnist (Zalando's original files under
# /usr/share/datasets/fashion-mnist/) for the Fashion-MNIST loader's tests
# (tests/test_fashion_mnist.py). Idempotent.
set -euo pipefail
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
