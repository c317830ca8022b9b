// kd's Shampoo (CPU, f64 context) against the PyTorch reference of docs/shampoo.md
// (tests/reference/shampoo_reference.py, written from the same specification, not from kd):
// the same quadratic problem, 30 steps, each grafting type (adam, adagrad, sgd with Nesterov
// momentum), blocks of 8 with remainders, clipping active on some steps, roots every 5 steps used
// one step later, Shampoo's direction from step 7. Every parameter after every step within 1e-9
// (relative L2 per parameter; the two sides differ only in summation order).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/optim/optimizer.h"
#include "engine/safetensors.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

const SafetensorsFile& fixtures() {
  static const SafetensorsFile file = SafetensorsFile::open(std::string(KD_PARITY_DIR) + "/shampoo_optim.safetensors");
  return file;
}

Tensor fixture(const std::string& name) { return fixtures().tensor_as(name, fixtures().entry(name).shape, DType::f64); }

struct Problem {
  std::unique_ptr<Context> ctx = Context::cpu(DType::f64);
  ParamStore store;
  std::vector<std::string> names;
  explicit Problem(const nlohmann::json& params) {
    for (const auto& p : params) {
      Shape shape;
      for (int64_t d : p["shape"]) shape.push_back(d);
      store.add(p["name"], shape, ParamInit::zeros, p["decay"].get<bool>());
      names.push_back(p["name"]);
    }
    store.allocate(*ctx);
    for (const std::string& n : names) store.get(n).value.copy_from(fixture("problem/" + n + "/init"), ctx.get());
  }
  // grad = A W B + C (matrix views) or a * w + c (vectors), in double.
  void set_gradients() {
    for (const std::string& n : names) {
      Param& p = store.get(n);
      const double* w = p.value.data<double>();
      double* g = p.grad.data<double>();
      if (p.shape.size() == 2) {
        const int64_t r = p.shape[0], c = p.shape[1];
        const Tensor a = fixture("problem/" + n + "/A"), b = fixture("problem/" + n + "/B"),
                     cc = fixture("problem/" + n + "/C");
        std::vector<double> aw(size_t(r * c), 0.0);
        for (int64_t i = 0; i < r; ++i)
          for (int64_t k = 0; k < r; ++k)
            for (int64_t j = 0; j < c; ++j) aw[size_t(i * c + j)] += a.data<double>()[i * r + k] * w[k * c + j];
        for (int64_t i = 0; i < r; ++i)
          for (int64_t j = 0; j < c; ++j) {
            double v = cc.data<double>()[i * c + j];
            for (int64_t k = 0; k < c; ++k) v += aw[size_t(i * c + k)] * b.data<double>()[k * c + j];
            g[i * c + j] = v;
          }
      } else {
        const Tensor a = fixture("problem/" + n + "/a"), c = fixture("problem/" + n + "/c");
        for (int64_t i = 0; i < p.numel(); ++i) g[i] = a.data<double>()[i] * w[i] + c.data<double>()[i];
      }
    }
  }
  double distance(const std::string& name, const std::string& fixture_name) {
    const Param& p = store.get(name);
    const Tensor want = fixture(fixture_name);
    return test::rel_l2(p.value.data<double>(), want.data<double>(), size_t(p.numel()));
  }
};

OptimizerConfig config_of(const nlohmann::json& c) {
  OptimizerConfig o;
  o.name = "shampoo";
  o.lr = c["lr"], o.weight_decay = c["weight_decay"], o.clip_norm = c["clip_norm"];
  o.beta1 = c["beta1"], o.beta2 = c["beta2"], o.eps = c["eps"];
  o.momentum = c["momentum"], o.nesterov = c["nesterov"];
  o.shampoo.graft = c["graft"], o.shampoo.block_size = c["block_size"], o.shampoo.beta2 = c["shampoo_beta2"];
  o.shampoo.eps = c["shampoo_eps"], o.shampoo.statistics_every = c["statistics_every"];
  o.shampoo.precondition_every = c["precondition_every"], o.shampoo.start_step = c["start_step"];
  o.shampoo.root_delay = c["root_delay"];
  EXPECT_EQ(c["p"].get<int>(), 4) << "kd's Shampoo takes 4th roots";
  return o;
}

TEST(ShampooOptim, MatchesThePyTorchReferenceForEveryGraftingType) {
  const auto& meta = fixtures().metadata();
  const nlohmann::json params = nlohmann::json::parse(meta.at("params"));
  const int steps = std::stoi(meta.at("steps"));
  for (const std::string graft : nlohmann::json::parse(meta.at("cases"))) {
    Problem pb(params);
    const OptimizerConfig oc = config_of(nlohmann::json::parse(meta.at("config/" + graft)));
    ScheduleConfig sc;
    sc.total_steps = steps, sc.decay = "constant";
    auto opt = Optimizer::create(pb.store, oc, sc, *pb.ctx);
    double worst = 0;
    for (int k = 1; k <= steps; ++k) {
      pb.set_gradients();
      ASSERT_TRUE(opt->step(*pb.ctx).finite);
      for (const std::string& n : pb.names) {
        const double d = pb.distance(n, "optim/" + graft + "/step_" + std::to_string(k) + "/" + n);
        worst = std::max(worst, d);
        ASSERT_LT(d, 1e-9) << graft << ", step " << k << ", " << n;
      }
    }
    std::printf("shampoo %s grafting: 30 steps, largest relative distance to PyTorch %.3g\n", graft.c_str(), worst);
    const auto m = opt->metrics();
    EXPECT_EQ(m[1].first, "shampoo_roots_rejected");
    EXPECT_EQ(m[1].second, 0.0);
    EXPECT_GT(m[2].second, 1.0) << "condition numbers of the damped statistics";
  }
}

// With Adam grafting, the steps before shampoo_start_step are AdamW's: the reference's AdamW
// trajectory, which kd's Shampoo must reproduce.
TEST(ShampooOptim, BeforeTheStartStepAdamGraftingIsAdamW) {
  const auto& meta = fixtures().metadata();
  Problem pb(nlohmann::json::parse(meta.at("params")));
  const OptimizerConfig oc = config_of(nlohmann::json::parse(meta.at("config/adam")));
  ScheduleConfig sc;
  sc.total_steps = 30, sc.decay = "constant";
  auto opt = Optimizer::create(pb.store, oc, sc, *pb.ctx);
  for (int k = 1; k <= std::stoi(meta.at("adamw_steps")); ++k) {
    pb.set_gradients();
    opt->step(*pb.ctx);
    for (const std::string& n : pb.names)
      EXPECT_LT(pb.distance(n, "adamw/step_" + std::to_string(k) + "/" + n), 1e-12) << "step " << k << ", " << n;
  }
}

}  // namespace
}  // namespace kd
