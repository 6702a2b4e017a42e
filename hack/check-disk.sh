#!/usr/bin/env bash
# Refuse to start a large install when the disk cannot hold it, instead of
# failing half-way with "No space left on device":
#   hack/check-disk.sh PATH GIB
# checks the filesystems of PATH and of the temporary folder (pip unpacks there).
set -euo pipefail
path=$1 need_gib=$2
tmp=${TMPDIR:-/tmp}
for dir in "$path" "$tmp"; do
  probe=$dir
  while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
  free_kib=$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')
  if [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
    printf 'not enough disk for the Python packages: %s has %d MiB free, the install needs about %d GiB\n' \
      "$probe" $((free_kib / 1024)) "$need_gib" >&2
    printf '(torch with its CUDA libraries is about 5.5 GiB installed, plus the downloads while installing)\n' >&2
    exit 1
  fi
done
