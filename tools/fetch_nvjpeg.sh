#!/usr/bin/env bash
# nvJPEG (data.jpeg_decoder=nvjpeg, kernels/jpeg_device.h) is not part of every CUDA toolkit
# install; PyPI's wheel ships nvjpeg.h and libnvjpeg.so.13. Unpacks it into .deps/nvjpeg, where
# CMake looks (and which the GPU machine gets with the rest of .deps). Pinned to the toolkit's
# minor version. Without network it says so and kd builds without the GPU JPEG decoder.
set -euo pipefail
cd "$(dirname "$0")/.."
NVJPEG_VERSION=13.0.4.44
dir="$(pwd)/.deps/nvjpeg"
[ -f "$dir/VERSION" ] && [ "$(cat "$dir/VERSION")" = "$NVJPEG_VERSION" ] && exit 0
echo "fetch_nvjpeg: unpacking nvidia-nvjpeg==$NVJPEG_VERSION from PyPI into .deps/nvjpeg"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
if ! python3 -m pip download -q --no-deps -d "$wheels" "nvidia-nvjpeg==$NVJPEG_VERSION" 2>/dev/null; then
  echo "fetch_nvjpeg: nvidia-nvjpeg could not be downloaded; kd builds without the GPU JPEG decoder" >&2
  exit 0
fi
rm -rf "$dir" && mkdir -p "$dir"
python3 -c "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]).extractall(sys.argv[2])" \
  "$wheels" "$dir"
echo "$NVJPEG_VERSION" >"$dir/VERSION"
