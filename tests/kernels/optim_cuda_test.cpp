// Optimizer kernels against the CPU updates (same KD_HD element functions), over several steps
// from random non-zero optimizer state, with grad_scale != 1, awkward sizes and misaligned
// pointers; the bf16 compute copy must equal the rounded master weights bit for bit. CPU side:
// sum_squares_cuda's fixed partition.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/check.h"
#include "kernels/optim.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

TEST(SumSquaresPartition, ChunksCoverEveryElementOnceInVectorOrder) {
  const int64_t chunks = 3;
  std::vector<int> seen(size_t(chunks * kSumSquaresChunk), 0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    for (int t = 0; t < kSumSquaresThreads; ++t)
      for (int v = 0; v < kSumSquaresVectors; ++v) {
        const int64_t e0 = sum_squares_element(chunk, t, v, 0);
        ASSERT_EQ(e0 % 4, 0) << "a vector starts 16-byte aligned";
        ASSERT_GE(e0, chunk * kSumSquaresChunk);
        ASSERT_LT(e0 + 3, (chunk + 1) * kSumSquaresChunk);
        for (int lane = 0; lane < 4; ++lane) {
          ASSERT_EQ(sum_squares_element(chunk, t, v, lane), e0 + lane);
          ++seen[size_t(e0 + lane)];
        }
        // Neighbouring threads read neighbouring vectors: coalesced.
        if (t > 0) {
          ASSERT_EQ(e0 - sum_squares_element(chunk, t - 1, v, 0), 4);
        }
      }
  for (int count : seen) ASSERT_EQ(count, 1);
}

#if KD_HAVE_CUDA
using test::DeviceArray;

// 1 element, tail only, vectors plus a tail, several grid strides plus a tail.
constexpr int64_t kSizes[] = {1, 7, 4099, (int64_t(1) << 21) + 5};
constexpr int kSteps = 5;

std::vector<float> gradient_at(int64_t n, int step) { return random_vector<float>(size_t(n), 100 + uint64_t(step), -2, 2); }

// Bit-for-bit: w_compute holds float_to_bf16 of the master weights.
void expect_compute_copy(const std::vector<bf16>& copy, const std::vector<float>& w, const std::string& what) {
  size_t mismatches = 0;
  for (size_t i = 0; i < w.size(); ++i) mismatches += copy[i].bits != float_to_bf16(w[i]).bits;
  EXPECT_EQ(mismatches, 0u) << what;
}
#endif

TEST(OptimCuda, AdamMatchesCpuOverSeveralSteps) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t n : kSizes)
    for (size_t offset : {size_t(0), size_t(1)})  // offset 1: misaligned, the scalar path
      for (float wd : {0.0f, 0.05f}) {
        const std::string what = detail::concat("adam n ", n, " offset ", offset, " wd ", wd);
        AdamHyper hp;
        hp.lr = 0.01f, hp.beta1 = 0.9f, hp.beta2 = 0.99f, hp.eps = 1e-6f;
        const float grad_scale = 0.37f;
        std::vector<float> w = random_vector<float>(size_t(n), 1), m = random_vector<float>(size_t(n), 2, -0.1, 0.1),
                           v = random_vector<float>(size_t(n), 3, 0.0, 0.01);
        DeviceArray<float> d_w(w, offset), d_m(m, offset), d_v(v, offset), d_g(size_t(n), offset);
        DeviceArray<bf16> d_wc(size_t(n), offset);
        for (int t = 1; t <= kSteps; ++t) {
          hp.step = t;
          const std::vector<float> g = gradient_at(n, t);
          adam_update_cpu(n, hp, wd, grad_scale, w.data(), g.data(), m.data(), v.data());
          d_g.upload(g);
          d_wc.poison();
          adam_update_cuda(h, n, hp, wd, grad_scale, d_w.get(), d_g.get(), d_m.get(), d_v.get(),
                           t % 2 ? d_wc.get() : nullptr);
          const std::vector<float> got_w = d_w.download();
          ASSERT_LE(rel_l2(got_w, w), 1e-6) << what << " step " << t;
          ASSERT_LE(rel_l2(d_m.download(), m), 1e-6) << what << " step " << t;
          ASSERT_LE(rel_l2(d_v.download(), v), 1e-6) << what << " step " << t;
          if (t % 2) expect_compute_copy(d_wc.download(), got_w, what);
        }
      }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(OptimCuda, SgdMatchesCpuOverSeveralSteps) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t n : kSizes)
    for (size_t offset : {size_t(0), size_t(1)})
      for (bool nesterov : {false, true})
        for (float wd : {0.0f, 1e-4f}) {
          const std::string what = detail::concat("sgd n ", n, " offset ", offset, " nesterov ", nesterov, " wd ", wd);
          SgdHyper hp;
          hp.lr = 0.1f, hp.momentum = 0.9f, hp.nesterov = nesterov;
          const float grad_scale = 1.7f;
          // A non-zero buffer: step 1 must overwrite it (buf = g), later steps accumulate.
          std::vector<float> w = random_vector<float>(size_t(n), 4), buf = random_vector<float>(size_t(n), 5);
          DeviceArray<float> d_w(w, offset), d_buf(buf, offset), d_g(size_t(n), offset);
          DeviceArray<bf16> d_wc(size_t(n), offset);
          for (int t = 1; t <= kSteps; ++t) {
            hp.step = t;
            const std::vector<float> g = gradient_at(n, t);
            sgd_update_cpu(n, hp, wd, grad_scale, w.data(), g.data(), buf.data());
            d_g.upload(g);
            d_wc.poison();
            sgd_update_cuda(h, n, hp, wd, grad_scale, d_w.get(), d_g.get(), d_buf.get(), d_wc.get());
            const std::vector<float> got_w = d_w.download();
            ASSERT_LE(rel_l2(got_w, w), 1e-6) << what << " step " << t;
            ASSERT_LE(rel_l2(d_buf.download(), buf), 1e-6) << what << " step " << t;
            expect_compute_copy(d_wc.download(), got_w, what);
          }
        }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(OptimCuda, SumSquaresMatchesCpuAndIsDeterministic) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const int64_t sizes[] = {0, 1, 7, kSumSquaresChunk - 1, kSumSquaresChunk, kSumSquaresChunk + 1,
                           (int64_t(3) << 20) + 5};
  for (int64_t n : sizes)
    for (size_t offset : {size_t(0), size_t(1)}) {
      const std::string what = detail::concat("sum_squares n ", n, " offset ", offset);
      const std::vector<float> x = random_vector<float>(size_t(n), 6 + uint64_t(n), -3, 3);
      const double expected = sum_squares_cpu(n, x.data());
      DeviceArray<float> d_x(x, offset);
      DeviceArray<double> d_result(1);
      d_result.poison();
      sum_squares_cuda(h, n, n ? d_x.get() : nullptr, d_result.get());
      const double got = d_result.download()[0];
      EXPECT_LE(rel_l2(&got, &expected, 1), 1e-5) << what << ": " << got << " vs " << expected;
      d_result.poison();
      sum_squares_cuda(h, n, n ? d_x.get() : nullptr, d_result.get());
      const double again = d_result.download()[0];
      EXPECT_EQ(std::memcmp(&got, &again, sizeof got), 0) << what << ": " << got << " then " << again;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(OptimCuda, SumSquaresDoesNotDependOnAlignment) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  const int64_t n = 5 * kSumSquaresChunk + 3;
  const std::vector<float> x = random_vector<float>(size_t(n), 7);
  DeviceArray<float> aligned(x), misaligned(x, 1);
  DeviceArray<double> r1(1), r2(1);
  sum_squares_cuda(h, n, aligned.get(), r1.get());
  sum_squares_cuda(h, n, misaligned.get(), r2.get());
  EXPECT_EQ(r1.download(), r2.download());  // same partition, same order: the vector and scalar paths agree
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(OptimCuda, ScaleMatchesCpuBitForBit) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t n : kSizes)
    for (size_t offset : {size_t(0), size_t(1)}) {
      std::vector<float> x = random_vector<float>(size_t(n), 8);
      DeviceArray<float> d_x(x, offset);
      scale_cpu(n, 0.3f, x.data());
      scale_cuda(h, n, 0.3f, d_x.get());
      EXPECT_EQ(d_x.download(), x) << "n " << n << " offset " << offset;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(OptimCuda, AccumulateMatchesCpuBitForBit) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const CudaHandles& h = test::cuda_test_context().cuda_handles();
  for (int64_t n : kSizes)
    for (auto [src_offset, dst_offset] : {std::pair<size_t, size_t>{0, 0}, {1, 0}, {0, 3}, {1, 1}}) {
      std::vector<float> dst = random_vector<float>(size_t(n), 9);
      const std::vector<float> src = random_vector<float>(size_t(n), 10);
      DeviceArray<float> d_dst(dst, dst_offset), d_src(src, src_offset);
      accumulate_cpu(n, src.data(), dst.data());
      accumulate_cuda(h, n, d_src.get(), d_dst.get());
      EXPECT_EQ(d_dst.download(), dst) << "n " << n << " offsets " << src_offset << ", " << dst_offset;
    }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
