// Helpers for the GPU tests of kernels/: one CUDA context per test binary, device arrays that
// upload, download and poison, and bf16 rounding of random inputs. Only built with CUDA.
#pragma once
#if KD_HAVE_CUDA
#include <cstring>
#include <memory>
#include <vector>

#include "engine/context.h"
#include "kernels/common.h"
#include "tests/support/testing.h"

namespace kd::test {

// One context for the whole binary: cuDNN/cuBLASLt plans are cached per handle.
inline Context& cuda_test_context() {
  static std::unique_ptr<Context> ctx = Context::cuda(0);
  return *ctx;
}

// n elements of T in device memory, plus `offset` elements in front so a test can hand out a
// pointer that is only sizeof(T)-aligned.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n, size_t offset = 0)
      : n_(n), offset_(offset), base_(static_cast<T*>(device_alloc((n + offset) * sizeof(T), 0))) {}
  explicit DeviceArray(const std::vector<T>& host, size_t offset = 0) : DeviceArray(host.size(), offset) {
    upload(host);
  }
  ~DeviceArray() { device_free(base_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return base_ + offset_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    copy_bytes(get(), Device::cuda, host.data(), Device::cpu, n_ * sizeof(T), &cuda_test_context());
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    copy_bytes(host.data(), Device::cpu, get(), Device::cuda, n_ * sizeof(T), &cuda_test_context());
    return host;
  }
  // All bytes 0xFF: NaN in fp32 and in bf16, so an element the op never writes fails the check.
  void poison() {
    std::vector<unsigned char> bytes(n_ * sizeof(T), 0xFF);
    copy_bytes(get(), Device::cuda, bytes.data(), Device::cpu, bytes.size(), &cuda_test_context());
  }

 private:
  size_t n_, offset_;
  T* base_;
};

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

// Random values in [lo, hi) rounded to bf16: the GPU gets the bf16 bits, the CPU reference the
// same values in fp32.
struct Bf16Input {
  std::vector<bf16> bits;
  std::vector<float> values;
};
inline Bf16Input random_bf16(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Bf16Input in;
  in.bits = to_bf16(random_vector<float>(n, seed, lo, hi));
  in.values = to_f32(in.bits);
  return in;
}

// True when every element still has DeviceArray::poison's 0xFF bytes: an output the op was told
// not to write.
inline bool all_poisoned(const std::vector<float>& v) {
  for (float x : v) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    if (bits != 0xFFFFFFFFu) return false;
  }
  return true;
}

}  // namespace kd::test
#endif
