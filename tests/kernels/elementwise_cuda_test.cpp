// CUDA pointwise ops against the CPU loops, which run the same activation_apply /
// activation_derivative in fp32 on the same bf16-rounded inputs. Sizes cover the 16-byte vector
// path with and without a scalar tail, a single element, and misaligned pointers (scalar path).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/check.h"
#include "kernels/elementwise.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

#if KD_HAVE_CUDA
using test::DeviceArray;
using test::rel_l2;

constexpr Activation kActivations[] = {Activation::identity, Activation::relu, Activation::hardswish,
                                       Activation::sigmoid, Activation::hardsigmoid};
// 1 element; 7 (tail only); 8 (one vector); vectors plus a tail; several grid strides plus a tail.
constexpr int64_t kSizes[] = {1, 7, 8, 4099, (int64_t(1) << 21) + 3};

// Random bf16 values in [-5, 5): hardswish's three pieces and sigmoid's tails. The GPU gets the
// bits, the CPU reference the same values in fp32.
test::Bf16Input wide_bf16(size_t n, uint64_t seed) {
  test::Bf16Input in;
  in.bits = test::to_bf16(test::random_vector<float>(n, seed, -5.0, 5.0));
  in.values = test::to_f32(in.bits);
  return in;
}

// The GPU's bf16 result against the CPU's fp32 one: relative L2 within bf16 rounding, and for ops
// whose fp32 arithmetic is the same on both sides (no exp), bit-equal to the rounded CPU value.
void expect_matches(const std::vector<bf16>& got, const std::vector<float>& expected, bool exact,
                    const std::string& what) {
  EXPECT_LE(rel_l2(test::to_f32(got), expected), 1e-2) << what;
  if (!exact) return;
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) mismatches += got[i].bits != float_to_bf16(expected[i]).bits;
  EXPECT_EQ(mismatches, 0u) << what;
}

std::string describe(Activation a, int64_t n, size_t offset) {
  return "activation " + std::to_string(int(a)) + ", n " + std::to_string(n) + ", offset " + std::to_string(offset);
}
#endif

TEST(ElementwiseCuda, ActivationForwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (Activation a : kActivations)
    for (int64_t n : kSizes)
      for (size_t offset : {size_t(0), size_t(1)}) {  // offset 1: 2-byte aligned, the scalar path
        const test::Bf16Input x = wide_bf16(size_t(n), 10 + uint64_t(n));
        std::vector<float> expected(static_cast<size_t>(n));
        activation_forward_cpu<float>(a, n, x.values.data(), expected.data());
        DeviceArray<bf16> dx(x.bits, offset), dy(size_t(n), offset);
        dy.poison();
        activation_forward_cuda(h, a, n, dx.get(), dy.get());
        expect_matches(dy.download(), expected, a != Activation::sigmoid, describe(a, n, offset));
      }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ElementwiseCuda, ActivationForwardInPlace) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const int64_t n = 4099;
  const test::Bf16Input x = wide_bf16(size_t(n), 3);
  std::vector<float> expected(static_cast<size_t>(n));
  activation_forward_cpu<float>(Activation::hardswish, n, x.values.data(), expected.data());
  DeviceArray<bf16> dx(x.bits);
  activation_forward_cuda(h, Activation::hardswish, n, dx.get(), dx.get());
  expect_matches(dx.download(), expected, true, "hardswish in place");
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ElementwiseCuda, ActivationBackwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (Activation a : kActivations)
    for (int64_t n : kSizes)
      for (size_t offset : {size_t(0), size_t(1)}) {
        const test::Bf16Input x = wide_bf16(size_t(n), 20 + uint64_t(n)), dy = test::random_bf16(size_t(n), 30);
        std::vector<float> expected(static_cast<size_t>(n));
        activation_backward_cpu<float>(a, n, x.values.data(), dy.values.data(), expected.data());
        DeviceArray<bf16> d_x(x.bits, offset), d_dy(dy.bits, offset), d_dx(size_t(n), offset);
        d_dx.poison();
        activation_backward_cuda(h, a, n, d_x.get(), d_dy.get(), d_dx.get());
        expect_matches(d_dx.download(), expected,
                       a == Activation::identity || a == Activation::relu || a == Activation::hardsigmoid,
                       describe(a, n, offset));
      }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ElementwiseCuda, AddMatchesCpuAndAllowsTheOutputToAliasAnInput) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t n : kSizes)
    for (size_t offset : {size_t(0), size_t(1)}) {
      const test::Bf16Input a = test::random_bf16(size_t(n), 40), b = test::random_bf16(size_t(n), 41);
      std::vector<float> expected(static_cast<size_t>(n));
      add_cpu<float>(n, a.values.data(), b.values.data(), expected.data());
      const std::string what = "add n " + std::to_string(n) + ", offset " + std::to_string(offset);
      DeviceArray<bf16> da(a.bits, offset), db(b.bits, offset), dy(size_t(n), offset);
      dy.poison();
      add_cuda(h, n, da.get(), db.get(), dy.get());
      expect_matches(dy.download(), expected, true, what);
      add_cuda(h, n, da.get(), db.get(), db.get());  // y = a + y
      expect_matches(db.download(), expected, true, what + " in place");
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ElementwiseCuda, EmptyInputIsANoOp) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  EXPECT_NO_THROW(activation_forward_cuda(h, Activation::relu, 0, nullptr, nullptr));
  EXPECT_NO_THROW(add_cuda(h, 0, nullptr, nullptr, nullptr));
  EXPECT_THROW(add_cuda(h, -1, nullptr, nullptr, nullptr), Error);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
