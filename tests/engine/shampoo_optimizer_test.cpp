// The optimizer layer with Shampoo: Shampoo with Adam grafting is AdamW, bit for bit, until it
// starts preconditioning; every block's step then has the grafted step's norm; the state
// (statistics, roots, a pending delayed root, grafting moments) round-trips through a
// checkpoint bit for bit; bad state is named; root jobs spread evenly over ranks; optimizer
// state written before state was saved by name still loads. (The trajectory against PyTorch is
// tests/parity/shampoo_optim_parity_test.cpp.)
#include <gtest/gtest.h>

#include <cmath>

#include "engine/optim/optimizer.h"
#include "engine/optim/shampoo.h"
#include "engine/safetensors.h"
#include "kernels/shampoo.h"
#include "tests/data/data_fixtures.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

// A conv kernel [6, 3, 3, 4] (view [6, 36]), a dense [10, 6] and a bias [10].
struct Net {
  std::unique_ptr<Context> ctx;
  ParamStore store;
  explicit Net(DType precision = DType::f32, bool cuda = false)
      : ctx(cuda ? Context::cuda(0) : Context::cpu(precision)) {
    store.add("conv.weight", {6, 3, 3, 4}, ParamInit::normal, true, ParamLayout::conv_oihw, 0.5f);
    store.add("fc.weight", {10, 6}, ParamInit::normal, true, ParamLayout::same, 0.5f);
    store.add("fc.bias", {10}, ParamInit::normal, false, ParamLayout::same, 0.5f);
    store.allocate(*ctx);
    store.init(5, *ctx);
  }
  // A gradient that depends on the weights (so trajectories can diverge) and on the step.
  void set_grads(int step) {
    const auto noise = test::random_vector<float>(size_t(store.numel()), uint64_t(100 + step));
    if (ctx->is_cuda()) {
      const Tensor w = store.values().to(Device::cpu, ctx.get());
      Tensor g = Tensor::zeros_cpu({store.numel()}, DType::f32);
      for (int64_t i = 0; i < store.numel(); ++i) g.data<float>()[i] = 0.3f * w.data<float>()[i] + noise[size_t(i)];
      store.grads().copy_from(g, ctx.get());
      return;
    }
    for (int64_t i = 0; i < store.numel(); ++i) {
      if (store.grads().dtype() == DType::f64)
        store.grads().data<double>()[i] = 0.3 * store.values().data<double>()[i] + noise[size_t(i)];
      else
        store.grads().data<float>()[i] = 0.3f * store.values().data<float>()[i] + noise[size_t(i)];
    }
  }
  std::vector<float> values() const {
    const Tensor host = store.values().to(Device::cpu, ctx.get());
    const float* v = host.data<float>();
    return std::vector<float>(v, v + store.numel());
  }
};

OptimizerConfig shampoo_config(const std::string& graft = "adam") {
  OptimizerConfig c;
  c.name = "shampoo";
  c.lr = 0.02, c.weight_decay = 0.01, c.clip_norm = 3.0;
  c.shampoo.graft = graft, c.shampoo.block_size = 4, c.shampoo.precondition_every = 3, c.shampoo.start_step = 5;
  c.shampoo.root_delay = 1, c.shampoo.eps = 1e-3;
  return c;
}

ScheduleConfig schedule() {
  ScheduleConfig s;
  s.total_steps = 20, s.warmup_steps = 2;
  return s;
}

TEST(Shampoo, WithAdamGraftingItIsAdamWUntilItStartsPreconditioning) {
  Net a, b;
  OptimizerConfig adam = shampoo_config();
  adam.name = "adam";
  auto shampoo = Optimizer::create(a.store, shampoo_config(), schedule(), *a.ctx);
  auto adamw = Optimizer::create(b.store, adam, schedule(), *b.ctx);
  for (int step = 1; step <= 6; ++step) {
    a.set_grads(step);
    b.set_grads(step);
    shampoo->step(*a.ctx);
    adamw->step(*b.ctx);
    if (step < 5)
      EXPECT_EQ(a.values(), b.values()) << "bit for bit before shampoo_start_step, step " << step;
    else
      EXPECT_GT(test::rel_l2(a.values(), b.values()), 1e-4) << "preconditioned from step 5";
  }
}

// With SGD grafting (no momentum, no decay) a block's update is -lr D, and ||D|| per block is
// the grafted step's norm, the clipped gradient's.
TEST(Shampoo, EveryBlockStepsWithTheGraftedNorm) {
  Net net(DType::f64);
  OptimizerConfig c = shampoo_config("sgd");
  c.momentum = 0, c.weight_decay = 0, c.clip_norm = 0, c.shampoo.root_delay = 0, c.shampoo.start_step = 1;
  ScheduleConfig s;
  s.decay = "constant";
  auto opt = Optimizer::create(net.store, c, s, *net.ctx);
  for (int step = 1; step <= 4; ++step) {
    net.set_grads(step);
    const Tensor g = net.store.grads().to(Device::cpu), before = net.store.values().to(Device::cpu);
    opt->step(*net.ctx);
    if (step < 3) continue;  // roots from step 3 on (precondition_every 3, no delay)
    int blocks = 0;
    for (const Param& p : net.store.params()) {
      if (p.view_rows() == 0) continue;
      const int64_t ld = p.view_cols();
      for (const ShampooBlock& b : shampoo_blocks(p.view_rows(), ld, 4)) {
        double step_sq = 0, grad_sq = 0;
        for (int64_t i = 0; i < b.rows; ++i)
          for (int64_t j = 0; j < b.cols; ++j) {
            const int64_t k = p.offset + (b.row0 + i) * ld + b.col0 + j;
            const double d = (before.data<double>()[k] - net.store.values().data<double>()[k]) / c.lr;
            step_sq += d * d, grad_sq += g.data<double>()[k] * g.data<double>()[k];
          }
        EXPECT_NEAR(std::sqrt(step_sq), std::sqrt(grad_sq), 1e-10 * std::sqrt(grad_sq)) << p.name << " step " << step;
        ++blocks;
      }
    }
    EXPECT_EQ(blocks, 2 * 9 + 3 * 2);  // [6, 36] in 4 x 4 blocks: 2 x 9; [10, 6]: 3 x 2
  }
}

TEST(Shampoo, StateRoundTripsThroughACheckpointBitForBit) {
  for (const char* graft : {"adam", "adagrad", "sgd"}) {
    test::TempDir dir;
    Net a, b;
    auto first = Optimizer::create(a.store, shampoo_config(graft), schedule(), *a.ctx);
    for (int step = 1; step <= 6; ++step) {  // step 6: a root computed, waiting for step 7
      a.set_grads(step);
      first->step(*a.ctx);
    }
    SafetensorsWriter w;
    a.store.save(w, *a.ctx);
    first->save(w, *a.ctx);
    w.write(dir.file("c.safetensors"));
    SafetensorsFile file = SafetensorsFile::open(dir.file("c.safetensors"));
    EXPECT_TRUE(file.contains("optimizer.shampoo.conv.weight.0.Lnext")) << "the pending root is saved";
    auto second = Optimizer::create(b.store, shampoo_config(graft), schedule(), *b.ctx);
    b.store.load(file, *b.ctx);
    second->load(file, *b.ctx);
    EXPECT_EQ(second->steps_done(), 6);
    for (int step = 7; step <= 12; ++step) {
      a.set_grads(step);
      b.set_grads(step);
      first->step(*a.ctx);
      second->step(*b.ctx);
    }
    EXPECT_EQ(a.values(), b.values()) << graft << ": resumed Shampoo differs";
  }
}

TEST(Shampoo, BadStateIsNamed) {
  test::TempDir dir;
  Net a;
  auto opt = Optimizer::create(a.store, shampoo_config(), schedule(), *a.ctx);
  a.set_grads(1);
  opt->step(*a.ctx);
  SafetensorsWriter w;
  opt->save(w, *a.ctx);
  w.write(dir.file("ok.safetensors"));
  // A different block size: different blocks, named as missing.
  OptimizerConfig other = shampoo_config();
  other.shampoo.block_size = 8;
  auto wrong = Optimizer::create(a.store, other, schedule(), *a.ctx);
  try {
    wrong->load(SafetensorsFile::open(dir.file("ok.safetensors")), *a.ctx);
    FAIL() << "loaded state of other blocks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.shampoo.conv.weight."), std::string::npos) << e.what();
  }
  // Another optimizer's checkpoint.
  OptimizerConfig adam;
  auto adamw = Optimizer::create(a.store, adam, schedule(), *a.ctx);
  EXPECT_THROW(adamw->load(SafetensorsFile::open(dir.file("ok.safetensors")), *a.ctx), Error);
  // A wrong-shaped grafting moment names the tensor.
  SafetensorsWriter bad;
  SafetensorsFile good = SafetensorsFile::open(dir.file("ok.safetensors"));
  for (const std::string& n : good.names())
    bad.add(n, n == "optimizer.m.fc.weight" ? Tensor::zeros_cpu({3}, DType::f32) : good.tensor(n));
  bad.set_metadata("optimizer", "shampoo");
  bad.write(dir.file("bad.safetensors"));
  try {
    opt->load(SafetensorsFile::open(dir.file("bad.safetensors")), *a.ctx);
    FAIL() << "loaded a wrong-shaped moment";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.m.fc.weight"), std::string::npos) << e.what();
  }
}

TEST(Shampoo, RootJobsSpreadEvenlyOverRanks) {
  std::vector<double> costs;
  for (int n : {1024, 1024, 512, 512, 512, 256, 256, 64, 64, 2048}) costs.push_back(double(n) * n * n);
  for (int ranks : {1, 2, 3, 4, 16}) {
    const auto owner = assign_root_jobs(costs, ranks);
    std::vector<double> load(size_t(ranks), 0.0);
    for (size_t j = 0; j < costs.size(); ++j) {
      ASSERT_GE(owner[j], 0);
      ASSERT_LT(owner[j], ranks);
      load[size_t(owner[j])] += costs[j];
    }
    const double total = std::accumulate(load.begin(), load.end(), 0.0);
    const double largest = *std::max_element(costs.begin(), costs.end());
    // Greedy largest-first: no rank above the mean plus the largest job.
    EXPECT_LE(*std::max_element(load.begin(), load.end()), total / ranks + largest);
    EXPECT_EQ(owner, assign_root_jobs(costs, ranks)) << "deterministic";
  }
  EXPECT_EQ(assign_root_jobs({8.0, 1.0, 1.0}, 2), (std::vector<int>{0, 1, 1}));
}

// The CUDA Shampoo (fp32 statistics, batched Newton roots, cuBLAS directions) follows the CPU's
// (double eigen roots) within the roots' fp32 accuracy, for every grafting type.
TEST(ShampooCuda, FollowsTheCpuShampoo) {
  KD_REQUIRE_CUDA();
  for (const char* graft : {"adam", "adagrad", "sgd"}) {
    Net cpu, gpu(DType::f32, true);
    ASSERT_EQ(cpu.values(), gpu.values());
    auto a = Optimizer::create(cpu.store, shampoo_config(graft), schedule(), *cpu.ctx);
    auto b = Optimizer::create(gpu.store, shampoo_config(graft), schedule(), *gpu.ctx);
    const std::vector<float> start = cpu.values();
    for (int step = 1; step <= 12; ++step) {
      cpu.set_grads(step);
      gpu.set_grads(step);
      a->step(*cpu.ctx);
      b->step(*gpu.ctx);
    }
    const std::vector<float> wa = cpu.values(), wb = gpu.values();
    std::vector<float> da(wa.size()), db(wb.size());
    for (size_t i = 0; i < wa.size(); ++i) da[i] = wa[i] - start[i], db[i] = wb[i] - start[i];
    EXPECT_LT(test::rel_l2(db, da), 2e-2) << graft << ": the weights' change over 12 steps";
    EXPECT_EQ(b->metrics()[1].second, 0.0) << graft << ": no root rejected";
    // A bf16 compute copy follows the fp32 weights.
    const Tensor wc = gpu.store.compute_values().to(Device::cpu, gpu.ctx.get());
    for (size_t i = 0; i < wb.size(); i += 17)
      EXPECT_EQ(bf16_to_float(wc.data<bf16>()[i]), bf16_to_float(float_to_bf16(wb[i])));
  }
}

// Optimizer state from the first round: one flat tensor per state, in that round's layout
// (decayed parameters first, each part in declaration order).
TEST(Optimizer, FirstRoundCheckpointsStillResume) {
  test::TempDir dir;
  Net net;
  OptimizerConfig adam;
  const int64_t n = net.store.numel();
  Tensor m = Tensor::zeros_cpu({n}, DType::f32), v = Tensor::zeros_cpu({n}, DType::f32);
  for (const Param& p : net.store.params())
    for (int64_t i = 0; i < p.numel(); ++i) {
      m.data<float>()[net.store.legacy_offset(p) + i] = float(p.index) + 0.001f * float(i);
      v.data<float>()[net.store.legacy_offset(p) + i] = 1.0f + float(p.index);
    }
  EXPECT_NE(net.store.legacy_offset(net.store.get("conv.weight")), net.store.get("conv.weight").offset)
      << "the layouts differ, so this test means something";
  SafetensorsWriter w;
  w.add("optimizer.m", m);
  w.add("optimizer.v", v);
  Tensor step = Tensor::zeros_cpu({1}, DType::i64);
  step.data<int64_t>()[0] = 7;
  w.add("optimizer.step", step);
  w.set_metadata("optimizer", "adam");
  w.write(dir.file("old.safetensors"));
  auto opt = Optimizer::create(net.store, adam, schedule(), *net.ctx);
  opt->load(SafetensorsFile::open(dir.file("old.safetensors")), *net.ctx);
  EXPECT_EQ(opt->steps_done(), 7);
  SafetensorsWriter out;
  opt->save(out, *net.ctx);
  out.write(dir.file("new.safetensors"));
  SafetensorsFile now = SafetensorsFile::open(dir.file("new.safetensors"));
  const Tensor fc = now.tensor("optimizer.m.fc.weight");
  EXPECT_EQ(fc.data<float>()[3], float(net.store.get("fc.weight").index) + 0.003f) << "read at the old offset";
  EXPECT_EQ(now.tensor("optimizer.v.fc.bias").data<float>()[0], 1.0f + float(net.store.get("fc.bias").index));
}

}  // namespace
}  // namespace kd
