#!/usr/bin/env bash
# Run on the dev machine before a GPU session: the GPU machine has no Debian -dev packages and no
# network, so the headers and libraries kd builds against travel with the working tree. Downloads
# the .deb files (apt-get download) and unpacks them into .deps/root (ignored by git); then
#   device run:  carry [".deps"], command "tools/gpu_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(libgtest-dev libstb-dev libtomlplusplus-dev nlohmann-json3-dev libcli11-dev
          libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0 zlib1g zlib1g-dev
          libjpeg62-turbo libjpeg62-turbo-dev)
rm -rf .deps/root .deps/debs
mkdir -p .deps/debs .deps/root
(cd .deps/debs && apt-get download "${packages[@]}" >/dev/null)
for deb in .deps/debs/*.deb; do dpkg -x "$deb" .deps/root; done
# What kd does not link (static OpenBLAS, LAPACK) would only eat into the 64 MiB a run may carry.
rm -rf .deps/debs .deps/root/usr/share/doc .deps/root/usr/share/man
find .deps/root -path '*openblas-openmp*' \( -name '*.a' -o -name 'liblapack*' -o -name 'libblas*' \) -delete
tools/fetch_nvjpeg.sh
# A few photos for kd bench-loader's nvJPEG row (the GPU machine has no scikit-image), made by
# Debian's Python, where apt-get installs scikit-image and PIL (not a pyenv python3 first in PATH).
[ -d .deps/jpegfix ] || /usr/bin/python3 tools/make_jpeg_fixture.py .deps/jpegfix --count 100 >/dev/null ||
  echo "gpu_prepare: no JPEG fixture (tools/make_jpeg_fixture.py needs python3-skimage)" >&2
echo "gpu_prepare: $(du -sh .deps | cut -f1) in .deps (carry it: carry=[\".deps\"])"
