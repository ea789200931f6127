#!/usr/bin/env bash
# SD-BNN's reduced evidence is the decisive binary grid shared with IR2Net (docs/binary.md): `make reproduce-binary`.
exec "$(dirname "$0")/reproduce_binary.sh" "$@"
