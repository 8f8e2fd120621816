#!/bin/sh
# Uploaded by boot-smoke.toml: proves upload keeps content and mode.
echo "hello from $(uname -m)"
