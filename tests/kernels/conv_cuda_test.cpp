// cuDNN convolutions against the CPU reference. The ConvCudaLayout tests run everywhere: they check
// the numbers conv.cu hands to cuDNN (dims, strides, padding, implied groups) by evaluating a
// convolution with cuDNN's semantics from those numbers alone. The ConvCuda tests need a device.
#include <gtest/gtest.h>

#include <iostream>
#include <set>
#include <sstream>

#include "kernels/conv.h"
#include "kernels/conv_cuda_layout.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/conv_shapes.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

using test::random_vector;
using test::rel_l2;

using test::conv_shape;

Conv2dShape asymmetric() {  // 3x5 taps, stride 2x1, padding 1x2, dilation 1x2
  Conv2dShape s = conv_shape(2, 9, 11, 8, 12, 3, 2, 1);
  s.kw = 5, s.stride_w = 1, s.pad_w = 2, s.dilation_w = 2;
  return s;
}

std::vector<Conv2dShape> shapes() {
  return {
      conv_shape(2, 8, 8, 16, 32, 3, 1, 1),           // plain 3x3
      conv_shape(2, 8, 8, 64, 32, 1, 1, 0),           // pointwise
      conv_shape(2, 9, 9, 32, 64, 1, 2, 0),           // strided 1x1 (shortcut projection)
      conv_shape(2, 10, 10, 32, 64, 3, 2, 1),         // strided 3x3
      conv_shape(2, 32, 32, 3, 16, 7, 2, 3),          // 7x7 stem, 3 input channels
      conv_shape(2, 8, 8, 32, 32, 3, 1, 1, 4),        // grouped, 8 channels per group
      conv_shape(2, 8, 8, 32, 32, 3, 1, 1, 32),       // depthwise
      conv_shape(2, 9, 9, 16, 32, 5, 2, 2, 16),       // depthwise, channel multiplier 2, 5x5
      conv_shape(1, 12, 12, 16, 16, 3, 1, 2, 1, 2),   // dilated
      asymmetric(),
  };
}

// ---- CPU: the descriptor numbers -------------------------------------------------------------

TEST(ConvCudaLayout, StridesAddressNhwcActivationsAndOhwiWeights) {
  for (const Conv2dShape& s : shapes()) {
    const CudnnTensorLayout x = conv_x_layout(s), w = conv_w_layout(s), y = conv_y_layout(s);
    EXPECT_EQ(x.numel(), s.x_numel()) << s.describe();
    EXPECT_EQ(w.numel(), s.w_numel()) << s.describe();
    EXPECT_EQ(y.numel(), s.y_numel()) << s.describe();
    EXPECT_EQ(x.dims[1] / w.dims[1], s.groups) << "cuDNN infers groups from C(x) / C(w): " << s.describe();
    // Every (n, c, h, w) lands where conv.cpp reads it, and no two land on the same element.
    std::set<int64_t> seen;
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t c = 0; c < s.c_in; ++c)
        for (int64_t i = 0; i < s.h; ++i)
          for (int64_t j = 0; j < s.w; ++j) {
            const int64_t off = x.offset(n, c, i, j);
            ASSERT_EQ(off, ((n * s.h + i) * s.w + j) * s.c_in + c) << s.describe();
            seen.insert(off);
          }
    EXPECT_EQ(int64_t(seen.size()), s.x_numel());
    const int64_t cg = s.c_in_per_group();
    for (int64_t k = 0; k < s.c_out; ++k)
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t r = 0; r < s.kh; ++r)
          for (int64_t q = 0; q < s.kw; ++q)
            ASSERT_EQ(w.offset(k, c, r, q), ((k * s.kh + r) * s.kw + q) * cg + c) << s.describe();
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t k = 0; k < s.c_out; ++k)
        for (int64_t i = 0; i < s.out_h(); ++i)
          for (int64_t j = 0; j < s.out_w(); ++j)
            ASSERT_EQ(y.offset(n, k, i, j), ((n * s.out_h() + i) * s.out_w() + j) * s.c_out + k) << s.describe();
  }
}

// The forward convolution as cuDNN defines it, computed only from the descriptor numbers:
// y[n,k,p,q] = sum over c < C(w), r, s of x[n, g*C(w) + c, p*u - pre + r*dil, ...] * w[k,c,r,s]
// with g = k / (K / groups) and groups = C(x) / C(w).
std::vector<double> cudnn_semantics_forward(const CudnnTensorLayout& xl, const CudnnTensorLayout& wl,
                                            const CudnnTensorLayout& yl, const CudnnConvParams& p,
                                            const std::vector<double>& x, const std::vector<double>& w) {
  const int64_t groups = xl.dims[1] / wl.dims[1], k_per_group = wl.dims[0] / groups;
  std::vector<double> y(size_t(yl.numel()), NAN);
  for (int64_t n = 0; n < yl.dims[0]; ++n)
    for (int64_t k = 0; k < yl.dims[1]; ++k)
      for (int64_t oi = 0; oi < yl.dims[2]; ++oi)
        for (int64_t oj = 0; oj < yl.dims[3]; ++oj) {
          const int64_t g = k / k_per_group;
          double acc = 0;
          for (int64_t c = 0; c < wl.dims[1]; ++c)
            for (int64_t r = 0; r < wl.dims[2]; ++r)
              for (int64_t q = 0; q < wl.dims[3]; ++q) {
                const int64_t i = oi * p.filter_strides[0] - p.pre_padding[0] + r * p.dilations[0];
                const int64_t j = oj * p.filter_strides[1] - p.pre_padding[1] + q * p.dilations[1];
                if (i < 0 || i >= xl.dims[2] || j < 0 || j >= xl.dims[3]) continue;
                acc += x[size_t(xl.offset(n, g * wl.dims[1] + c, i, j))] * w[size_t(wl.offset(k, c, r, q))];
              }
          y[size_t(yl.offset(n, k, oi, oj))] = acc;
        }
  return y;
}

TEST(ConvCudaLayout, DescriptorNumbersReproduceTheCpuConvolution) {
  for (const Conv2dShape& s : shapes()) {
    const CudnnTensorLayout xl = conv_x_layout(s), wl = conv_w_layout(s), yl = conv_y_layout(s);
    const CudnnConvParams p = conv_cudnn_params(s);
    // cuDNN derives the output extent from the descriptors; it must be the one y is given.
    for (int a = 0; a < 2; ++a)
      EXPECT_EQ(cudnn_conv_out_dim(xl.dims[2 + a], p.pre_padding[a], p.post_padding[a], p.filter_strides[a],
                                   p.dilations[a], wl.dims[2 + a]),
                yl.dims[2 + a])
          << s.describe();
    const auto x = random_vector<double>(size_t(s.x_numel()), 11), w = random_vector<double>(size_t(s.w_numel()), 12);
    std::vector<double> expected(size_t(s.y_numel()), NAN);
    conv2d_forward_cpu<double>(s, x.data(), w.data(), expected.data());
    EXPECT_LT(rel_l2(cudnn_semantics_forward(xl, wl, yl, p, x, w), expected), 1e-12) << s.describe();
  }
}

TEST(ConvCudaLayout, PointerAlignmentIsTheLargestPowerOfTwoUpToTheCap) {
  alignas(64) static char buffer[128];
  EXPECT_EQ(pointer_alignment_bytes(buffer, 16), 16);
  EXPECT_EQ(pointer_alignment_bytes(buffer + 2, 16), 2);
  EXPECT_EQ(pointer_alignment_bytes(buffer + 8, 16), 8);
  EXPECT_EQ(pointer_alignment_bytes(buffer + 1, 16), 1);
  EXPECT_EQ(pointer_alignment_bytes(buffer + 32, 256), 32);
  EXPECT_EQ(pointer_alignment_bytes(buffer, 256) % 64, 0);
}

TEST(ConvCudaLayout, TheTuningKeyNamesEverythingTheChoiceDependsOn) {
  const Conv2dShape s = conv_shape(128, 56, 56, 256, 64, 1, 1, 0);
  const int64_t align[3] = {16, 16, 16};
  const std::string key = conv_tuning_key("NVIDIA H100 80GB HBM3 sm_90", "cuDNN 9.19.0", "conv2d_forward_cuda", s,
                                          align, 0, 8);
  EXPECT_EQ(key,
            "conv2d_forward_cuda | NVIDIA H100 80GB HBM3 sm_90 | cuDNN 9.19.0 | [128, 56, 56, 256] -> 64, k 1x1, "
            "stride 1x1, pad 0x0, dilation 1x1, groups 1 | align 16 16 16 | path 0 | 8 candidates");
  std::set<std::string> keys{key};
  Conv2dShape other = s;
  other.groups = 2;
  keys.insert(conv_tuning_key("NVIDIA H100 80GB HBM3 sm_90", "cuDNN 9.19.0", "conv2d_forward_cuda", other, align, 0, 8));
  keys.insert(conv_tuning_key("NVIDIA H200 sm_90", "cuDNN 9.19.0", "conv2d_forward_cuda", s, align, 0, 8));
  keys.insert(conv_tuning_key("NVIDIA H100 80GB HBM3 sm_90", "cuDNN 9.20.0", "conv2d_forward_cuda", s, align, 0, 8));
  keys.insert(conv_tuning_key("NVIDIA H100 80GB HBM3 sm_90", "cuDNN 9.19.0", "conv2d_forward_cuda", s, align, 1, 8));
  keys.insert(conv_tuning_key("NVIDIA H100 80GB HBM3 sm_90", "cuDNN 9.19.0", "conv2d_forward_cuda", s, align, 0, 7));
  const int64_t unaligned[3] = {2, 16, 16};
  keys.insert(conv_tuning_key("NVIDIA H100 80GB HBM3 sm_90", "cuDNN 9.19.0", "conv2d_forward_cuda", s, unaligned, 0, 8));
  EXPECT_EQ(keys.size(), 7u) << "every field changes the key";
  const std::string odd = conv_tuning_key("a\tb\nc", "lib", "op", s, align, 0, 8);
  EXPECT_EQ(odd.find_first_of("\t\n"), std::string::npos) << "one line without tabs: " << odd;
}

// ---- GPU: each op against the CPU reference --------------------------------------------------

class ConvCuda : public ::testing::TestWithParam<Conv2dShape> {};

#if KD_HAVE_CUDA
using test::Bf16Input;
using test::DeviceArray;
using test::random_bf16;
using test::to_f32;

const CudaHandles& handles() { return test::cuda_test_context().cuda_handles(); }
void sync() { test::cuda_test_context().synchronize(); }

void print_plans_for(const Conv2dShape& s) {
  std::istringstream report(conv2d_cuda_plan_report());
  for (std::string line; std::getline(report, line);)
    if (line.find(s.describe()) != std::string::npos) std::cout << "  [plan] " << line << "\n";
}

void check_forward(const CudaHandles& h, const Conv2dShape& s, size_t offset = 0) {
  const Bf16Input x = random_bf16(size_t(s.x_numel()), 21), w = random_bf16(size_t(s.w_numel()), 22);
  DeviceArray<bf16> dx(x.bits, offset), dw(w.bits, offset), dy(size_t(s.y_numel()), offset);
  dy.poison();
  conv2d_forward_cuda(h, s, dx.get(), dw.get(), dy.get());
  std::vector<float> expected(size_t(s.y_numel()));
  conv2d_forward_cpu<float>(s, x.values.data(), w.values.data(), expected.data());
  EXPECT_LT(rel_l2(to_f32(dy.download()), expected), 1e-2) << "forward " << s.describe();
}

void check_backward_data(const CudaHandles& h, const Conv2dShape& s, size_t offset = 0) {
  const Bf16Input g = random_bf16(size_t(s.y_numel()), 31), w = random_bf16(size_t(s.w_numel()), 32);
  DeviceArray<bf16> dg(g.bits, offset), dw(w.bits, offset), dx(size_t(s.x_numel()), offset);
  dx.poison();
  conv2d_backward_data_cuda(h, s, dg.get(), dw.get(), dx.get());
  std::vector<float> expected(size_t(s.x_numel()));
  conv2d_backward_data_cpu<float>(s, g.values.data(), w.values.data(), expected.data());
  EXPECT_LT(rel_l2(to_f32(dx.download()), expected), 1e-2) << "backward data " << s.describe();
}

// dw starts from random values and receives two weight gradients: both must be added.
void check_backward_filter(const CudaHandles& h, const Conv2dShape& s, size_t offset = 0) {
  const Bf16Input x = random_bf16(size_t(s.x_numel()), 41), g = random_bf16(size_t(s.y_numel()), 42);
  const std::vector<float> dw0 = random_vector<float>(size_t(s.w_numel()), 43);
  DeviceArray<bf16> dx(x.bits, offset), dg(g.bits, offset);
  DeviceArray<float> ddw(dw0, offset);
  conv2d_backward_filter_cuda(h, s, dx.get(), dg.get(), ddw.get());
  conv2d_backward_filter_cuda(h, s, dx.get(), dg.get(), ddw.get());
  std::vector<float> once(dw0.size(), 0.0f);
  conv2d_backward_filter_cpu<float>(s, x.values.data(), g.values.data(), once.data());
  const std::vector<float> got = ddw.download();
  std::vector<double> added(got.size()), expected(got.size());
  for (size_t i = 0; i < got.size(); ++i) added[i] = double(got[i]) - dw0[i], expected[i] = 2.0 * once[i];
  EXPECT_LT(rel_l2(added, expected), 1e-2) << "backward filter (twice) " << s.describe();
}
#endif

TEST_P(ConvCuda, ForwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_forward(handles(), GetParam());
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(ConvCuda, BackwardDataMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_backward_data(handles(), GetParam());
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST_P(ConvCuda, BackwardFilterAccumulatesIntoFp32LikeCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  check_backward_filter(handles(), GetParam());
  print_plans_for(GetParam());
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvCuda, ::testing::ValuesIn(shapes()));

// Each way of reaching fp32 dw, forced in turn. The scratch + add paths need only plain bf16
// weight-gradient engines, which cuDNN always has; fp32 dW engines may be missing (then skipped).
TEST(ConvCudaPlans, EveryWeightGradientPathMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  struct Restore {
    ~Restore() { conv2d_cuda_force_wgrad_path(-1); }
  } restore;
  for (const Conv2dShape& s : {conv_shape(2, 8, 8, 16, 32, 3, 1, 1), conv_shape(2, 8, 8, 32, 32, 3, 1, 1, 32)}) {
    for (int path = 0; path < 3; ++path) {
      conv2d_cuda_force_wgrad_path(path);
      SCOPED_TRACE(conv_wgrad_path_name(ConvWgradPath(path)));
      try {
        check_backward_filter(handles(), s);
      } catch (const Error& e) {
        if (path == int(ConvWgradPath::bf16_scratch_add)) throw;
        std::cout << "  [unsupported] " << conv_wgrad_path_name(ConvWgradPath(path)) << ": " << e.what() << "\n";
      }
    }
    print_plans_for(s);
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ConvCudaPlans, AutotunedPlansMatchCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  CudaHandles h = handles();
  h.autotune = true;
  const Conv2dShape s = conv_shape(4, 16, 16, 32, 64, 3, 1, 1);
  for (int rep = 0; rep < 2; ++rep) {  // the second round runs the cached choice
    check_forward(h, s);
    check_backward_data(h, s);
    check_backward_filter(h, s);
  }
  sync();
  print_plans_for(s);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

#if KD_HAVE_CUDA
// Records what the convolutions store; answers every lookup with `answer` (-1: nothing known).
class RecordingStore : public TuningStore {
 public:
  explicit RecordingStore(int64_t answer) : answer_(answer) {}
  int64_t find(const std::string& key) override {
    looked_up.push_back(key);
    return answer_;
  }
  void put(const std::string& key, int64_t choice, double ms) override {
    EXPECT_GE(choice, 0) << key;
    EXPECT_GT(ms, 0.0) << key;
    stored.push_back(key);
  }
  std::vector<std::string> looked_up, stored;

 private:
  int64_t answer_;
};
#endif

// With a tuning store, autotuning asks it first: a choice it knows is run without timing (and
// still computes the right thing), an unknown one is timed and recorded under the op's key.
TEST(ConvCudaPlans, AutotuningConsultsAndFillsTheTuningStore) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  RecordingStore empty(-1);
  CudaHandles h = handles();
  h.autotune = true;
  h.tuning_store = &empty;
  const Conv2dShape fresh = conv_shape(2, 12, 12, 24, 40, 3, 1, 1);  // shapes no other test plans
  check_forward(h, fresh);
  check_backward_filter(h, fresh);
  sync();
  EXPECT_FALSE(empty.looked_up.empty());
  ASSERT_FALSE(empty.stored.empty()) << "the timed choices were not recorded";
  EXPECT_NE(empty.stored[0].find("conv2d_forward_cuda | "), std::string::npos) << empty.stored[0];
  EXPECT_NE(empty.stored[0].find("[2, 12, 12, 24] -> 40"), std::string::npos) << empty.stored[0];

  RecordingStore knows(1);  // "candidate 1 was fastest"
  h.tuning_store = &knows;
  const Conv2dShape known = conv_shape(2, 10, 10, 24, 40, 3, 1, 1);
  check_forward(h, known);
  check_backward_data(h, known);
  sync();
  EXPECT_FALSE(knows.looked_up.empty());
  EXPECT_TRUE(knows.stored.empty()) << "a known choice must not be timed again";
  EXPECT_NE(conv2d_cuda_plan_report().find("(choice from the cache)"), std::string::npos)
      << conv2d_cuda_plan_report();
  print_plans_for(known);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

// Pointers that are only 2-byte aligned (4 for dw) must be described as such, not crash or
// read wrong data. cuDNN may have no engine for them: then the test says so and skips.
TEST(ConvCudaPlans, MisalignedPointersAreDescribedHonestly) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  const Conv2dShape s = conv_shape(2, 8, 8, 8, 16, 3, 1, 1);
  try {
    check_forward(handles(), s, 1);
    check_backward_data(handles(), s, 1);
    check_backward_filter(handles(), s, 1);
  } catch (const Error& e) {
    if (std::string(e.what()).find("no cuDNN engine") == std::string::npos) throw;
    GTEST_SKIP() << "cuDNN has no engine for 2-byte aligned tensors: " << e.what();
  }
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
