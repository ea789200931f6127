#!/usr/bin/env bash
# IR2Net's reduced evidence is the decisive binary grid shared with SD-BNN (docs/binary.md): `make reproduce-binary`.
exec "$(dirname "$0")/reproduce_binary.sh" "$@"
