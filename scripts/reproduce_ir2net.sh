#!/usr/bin/env bash
# IR2Net shares the SD-BNN equal-budget comparison (fp, bnn, irnet, sd_bnn, ir2net on Fashion-MNIST): one script runs
# both; finished runs are skipped (trainer.resume=auto finds their run directory).
exec "$(dirname "$0")/reproduce_sd_bnn.sh" "$@"
