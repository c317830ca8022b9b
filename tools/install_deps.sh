#!/usr/bin/env bash
# Installs what kd needs on a fresh Debian 12 machine (run as root). Idempotent and quiet when
# everything is present.  Usage: tools/install_deps.sh [--build] [--test] [--fuzz]
#   --build  compilers' libraries and headers, and matplotlib for kd plot (always implied)
#   --test   also what the tests need: PyTorch (Debian's python3-torch), and timm and tensorboard
#            from PyPI (TensorBoard reads kd's event files in the tests)
#   --fuzz   also what tools/fuzz.sh needs: clang with libFuzzer and the sanitizer runtimes
#            (libclang-rt-dev) and clang's OpenMP (libomp-dev)
set -euo pipefail

want_test=0
want_fuzz=0
for arg in "$@"; do
  case "$arg" in
    --build) ;;
    --test) want_test=1 ;;
    --fuzz) want_fuzz=1 ;;
    *) echo "install_deps.sh: unknown option '$arg' (use --build, --test, --fuzz)" >&2; exit 2 ;;
  esac
done

packages=(cmake ninja-build g++ pkg-config zlib1g-dev libjpeg62-turbo-dev libopenblas-openmp-dev libdnnl-dev libstb-dev libtomlplusplus-dev
          nlohmann-json3-dev libcli11-dev libgtest-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin
          python3-matplotlib)
if [ "$want_test" = 1 ]; then
  packages+=(python3 python3-pip python3-numpy python3-torch python3-torchvision)
fi
if [ "$want_fuzz" = 1 ]; then
  packages+=(clang libclang-rt-dev libomp-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# timm, the reference for the models, pinned; --no-deps keeps Debian's torch 1.13.
TIMM_VERSION=1.0.29
if [ "$want_test" = 1 ]; then
  if ! /usr/bin/python3 -c "import timm, sys; sys.exit(timm.__version__ != '$TIMM_VERSION')" 2>/dev/null; then
    echo "install_deps: installing timm==$TIMM_VERSION from PyPI"
    /usr/bin/python3 -m pip install -q --no-deps --break-system-packages "timm==$TIMM_VERSION"
  fi
fi

# nvJPEG (the optional GPU decode path) from PyPI, where CUDA is present.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  "$(dirname "$0")/fetch_nvjpeg.sh"
fi

# TensorBoard, pinned: 2.20.0 imports beside Debian's python3-torch 1.13 and numpy 1.24 (its own
# dependencies, protobuf and grpcio among them, come from PyPI).
TENSORBOARD_VERSION=2.20.0
if [ "$want_test" = 1 ]; then
  if ! /usr/bin/python3 -c "import tensorboard, sys; sys.exit(tensorboard.__version__ != '$TENSORBOARD_VERSION')" 2>/dev/null; then
    echo "install_deps: installing tensorboard==$TENSORBOARD_VERSION from PyPI"
    /usr/bin/python3 -m pip install -q --break-system-packages "tensorboard==$TENSORBOARD_VERSION"
  fi
fi
