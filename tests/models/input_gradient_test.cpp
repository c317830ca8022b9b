// Model::set_input_gradient(false), what the training step sets on its student: the convolution
// that reads the images skips its data gradient (one conv2d_backward_data fewer, seen in an
// OpProfile), backward returns an undefined tensor, and every parameter gradient is the same to
// the bit. One model of each family, on the CPU.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "engine/op_profile.h"
#include "engine/ops.h"
#include "models/model.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

struct Pass {
  Tensor dx, grads;
  int64_t data_gradients = 0;  // conv2d_backward_data calls
};

Pass train_pass(const std::string& arch, bool input_gradient) {
  auto ctx = Context::cpu(DType::f32);
  ModelSpec spec;
  spec.arch = arch, spec.num_classes = 5;
  const std::unique_ptr<Model> model = create_model(spec, *ctx, 3);
  model->set_input_gradient(input_gradient);
  Tensor x = Tensor::zeros_cpu({2, 32, 32, 3}, DType::f32), dy = Tensor::zeros_cpu({2, 5}, DType::f32);
  const std::vector<float> xv = test::random_vector<float>(size_t(x.numel()), 1, -1, 1);
  const std::vector<float> dv = test::random_vector<float>(size_t(dy.numel()), 2, -1, 1);
  std::memcpy(x.raw(), xv.data(), x.nbytes());
  std::memcpy(dy.raw(), dv.data(), dy.nbytes());
  Pass p;
  OpProfile profile(*ctx);
  model->forward(*ctx, x, Mode::train);
  p.dx = model->backward(*ctx, dy);
  for (const OpProfile::Row& r : profile.rows())
    if (r.label.rfind("conv2d_backward_data ", 0) == 0) p.data_gradients += r.calls;
  p.grads = model->params().grads().clone_cpu();
  return p;
}

TEST(ModelInputGradient, OffSkipsTheFirstConvolutionsDataGradientOnly) {
  for (const char* arch : {"resnetv2(depths=1-1, width=8, stem=conv3)", "resnet(depths=1-1, width=8, block=basic)",
                           "mobilenetv3_small_050"}) {
    const Pass with = train_pass(arch, true), without = train_pass(arch, false);
    ASSERT_TRUE(with.dx.defined()) << arch;
    EXPECT_EQ(with.dx.shape(), (Shape{2, 32, 32, 3})) << arch;
    EXPECT_FALSE(without.dx.defined()) << arch;
    EXPECT_EQ(with.data_gradients - without.data_gradients, 1) << arch;
    EXPECT_GT(without.data_gradients, 0) << arch << ": the other convolutions still pass gradients down";
    ASSERT_EQ(with.grads.nbytes(), without.grads.nbytes());
    EXPECT_EQ(std::memcmp(with.grads.raw(), without.grads.raw(), with.grads.nbytes()), 0) << arch;
    double norm = 0;
    for (int64_t i = 0; i < with.grads.numel(); ++i) norm += std::fabs(with.grads.data<float>()[i]);
    EXPECT_GT(norm, 0) << arch;
  }
}

}  // namespace
}  // namespace kd
