// Shampoo with grafting, as docs/shampoo.md specifies. Buffers: the grafting state, the grafted
// step `a`, the preconditioned input `G~` and the direction D as flat buffers laid out like the
// parameters; every statistic (L and R of every block) back to back in one buffer, the roots in
// another of the same layout (and, while a delayed root waits, a third). On the CPU the roots
// come from a double eigendecomposition; on a GPU from the batched fp32 Newton iteration.
#include "engine/optim/shampoo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "engine/comm.h"
#include "engine/optim/kinds.h"
#include "engine/safetensors.h"
#include "kernels/graft.h"
#include "kernels/shampoo.h"

namespace kd {

std::vector<int> assign_root_jobs(const std::vector<double>& costs, int ranks) {
  KD_CHECK(ranks >= 1, "assign_root_jobs: ", ranks, " ranks");
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(size_t(ranks), 0.0);
  std::vector<int> owner(costs.size(), 0);
  for (size_t j : order) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    owner[j] = r;
    load[size_t(r)] += costs[j];
  }
  return owner;
}

namespace {

// A root on the GPU is accepted when the Newton iteration's max|M - I| is at most this.
constexpr float kMaxRootError = 1e-2f;

GraftKind parse_graft(const std::string& name) {
  if (name == "adam") return GraftKind::adam;
  if (name == "adagrad") return GraftKind::adagrad;
  if (name == "sgd") return GraftKind::sgd;
  KD_FAIL("optim.shampoo_graft = '", name, "' is not one of adam, adagrad, sgd");
}

class Shampoo final : public Optimizer {
 public:
  Shampoo(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule, Context& ctx)
      : Optimizer(params, config, schedule, ctx), graft_(parse_graft(config.shampoo.graft)) {
    const ShampooConfig& s = config.shampoo;
    KD_CHECK(s.block_size >= 1, "optim.shampoo_block_size must be positive");
    KD_CHECK(s.statistics_every >= 1 && s.precondition_every >= 1,
             "optim.shampoo_statistics_every and optim.shampoo_precondition_every must be positive");
    KD_CHECK(s.root_delay >= 0 && s.root_delay < s.precondition_every, "optim.shampoo_root_delay = ", s.root_delay,
             " must be in [0, optim.shampoo_precondition_every = ", s.precondition_every, ")");
    KD_CHECK(s.start_step >= 1, "optim.shampoo_start_step is 1-based");
    KD_CHECK(s.beta2 > 0 && s.beta2 <= 1, "optim.shampoo_beta2 must be in (0, 1]");
    KD_CHECK(s.eps > 0, "optim.shampoo_eps must be positive");
    KD_CHECK(s.max_rejections >= 1, "optim.shampoo_max_rejections must be positive");
    dtype_ = ctx.param_dtype();
    KD_CHECK(dtype_ == DType::f32 || (dtype_ == DType::f64 && !ctx.is_cuda()), "shampoo: parameters must be f32 (or ",
             "f64 on the CPU), not ", dtype_name(dtype_));
    int64_t stats = 0;
    for (const Param& p : params.params()) {
      if (p.view_rows() == 0) continue;
      const auto grid = shampoo_blocks(p.view_rows(), p.view_cols(), s.block_size);
      for (size_t b = 0; b < grid.size(); ++b) {
        Block blk{&p, int(b), grid[b], stats, stats + grid[b].rows * grid[b].rows};
        stats = blk.r + grid[b].cols * grid[b].cols;
        blocks_.push_back(blk);
      }
    }
    stats_numel_ = stats;
    for (const Block& b : blocks_) {
      jobs_.push_back({b.l, b.geom.rows});  // job 2b: block b's L, job 2b + 1: its R
      jobs_.push_back({b.r, b.geom.cols});
    }
    valid_.assign(jobs_.size(), 0);
    pending_valid_.assign(jobs_.size(), 0);
    state1_ = make_flat_state(ctx);
    if (graft_ == GraftKind::adam) state2_ = make_flat_state(ctx);
    if (graft_ == GraftKind::sgd && config.momentum > 0) momentum_ = make_flat_state(ctx);
    a_ = make_flat_state(ctx);
    filtered_ = make_flat_state(ctx);
    direction_ = make_flat_state(ctx);
    if (graft_ == GraftKind::adam) scaled_ = make_flat_state(ctx);
    stats_ = zeros(ctx, std::max<int64_t>(1, stats_numel_));
    roots_ = zeros(ctx, std::max<int64_t>(1, stats_numel_));
    if (s.root_delay > 0) pending_ = zeros(ctx, std::max<int64_t>(1, stats_numel_));
  }

  const char* kind() const override { return "shampoo"; }
  void set_communicator(Communicator* comm) override { comm_ = comm; }

  std::vector<std::pair<std::string, double>> metrics() const override {
    return {{"shampoo_root_ms", last_root_ms_},
            {"shampoo_roots_rejected", double(rejected_total_)},
            {"shampoo_cond_max", cond_max_},
            {"shampoo_cond_median", cond_median_}};
  }

 protected:
  void update(Context& ctx, const UpdateArgs& a) override {
    const ShampooConfig& s = config_.shampoo;
    const int64_t t = a.step;
    if (pending_step_ >= 0 && t == pending_step_ + s.root_delay) install_pending(ctx);
    if (dtype_ == DType::f64)
      step_cpu<double>(ctx, a);
    else if (ctx.is_cuda())
      step_cuda(ctx, a);
    else
      step_cpu<float>(ctx, a);
  }

  void save_state(SafetensorsWriter& out, Context& ctx) const override {
    save_flat_state(out, ctx, graft_ == GraftKind::adagrad ? "h" : "m", state1_);
    if (state2_.defined()) save_flat_state(out, ctx, "v", state2_);
    if (momentum_.defined()) save_flat_state(out, ctx, "u", momentum_);
    const Tensor stats = stats_.to(Device::cpu, &ctx), roots = roots_.to(Device::cpu, &ctx);
    const Tensor pending = pending_step_ >= 0 ? pending_.to(Device::cpu, &ctx) : Tensor();
    for (const Block& b : blocks_) {
      const std::string base = block_name(b);
      auto add = [&](const char* what, const Tensor& from, int64_t offset, int64_t n) {
        Tensor t = Tensor::zeros_cpu({n, n}, from.dtype());
        std::memcpy(t.raw(), static_cast<const char*>(from.raw()) + offset * int64_t(dtype_size(from.dtype())),
                    t.nbytes());
        out.add(base + what, t);
      };
      add(".L", stats, b.l, b.geom.rows);
      add(".R", stats, b.r, b.geom.cols);
      add(".Linv", roots, b.l, b.geom.rows);
      add(".Rinv", roots, b.r, b.geom.cols);
      if (pending.defined()) {
        add(".Lnext", pending, b.l, b.geom.rows);
        add(".Rnext", pending, b.r, b.geom.cols);
      }
    }
    Tensor counters = Tensor::zeros_cpu({3}, DType::i64);
    int64_t* c = counters.data<int64_t>();
    c[0] = pending_step_, c[1] = rejected_total_, c[2] = consecutive_rejections_;
    out.add("optimizer.shampoo.counters", counters);
    Tensor valid = Tensor::zeros_cpu({2, int64_t(jobs_.size())}, DType::i64);
    for (size_t j = 0; j < jobs_.size(); ++j)
      valid.data<int64_t>()[j] = valid_[j], valid.data<int64_t>()[jobs_.size() + j] = pending_valid_[j];
    out.add("optimizer.shampoo.roots_valid", valid);
  }

  void load_state(const SafetensorsFile& file, Context& ctx) override {
    load_flat_state(file, ctx, graft_ == GraftKind::adagrad ? "h" : "m", state1_);
    if (state2_.defined()) load_flat_state(file, ctx, "v", state2_);
    if (momentum_.defined()) load_flat_state(file, ctx, "u", momentum_);
    Tensor stats = Tensor::zeros_cpu(stats_.shape(), dtype_), roots = Tensor::zeros_cpu(roots_.shape(), dtype_);
    Tensor pending = Tensor::zeros_cpu(stats_.shape(), dtype_);
    for (const Block& b : blocks_) {
      const std::string base = block_name(b);
      auto read = [&](const char* what, Tensor& into, int64_t offset, int64_t n) {
        const std::string name = base + what;
        KD_CHECK(file.contains(name), file.path(), ": Shampoo state '", name, "' is missing (optim.shampoo_block_size ",
                 "or the model changed?)");
        const Tensor t = file.tensor_as(name, {n, n}, dtype_);
        std::memcpy(static_cast<char*>(into.raw()) + offset * int64_t(dtype_size(dtype_)), t.raw(), t.nbytes());
      };
      read(".L", stats, b.l, b.geom.rows);
      read(".R", stats, b.r, b.geom.cols);
      read(".Linv", roots, b.l, b.geom.rows);
      read(".Rinv", roots, b.r, b.geom.cols);
      if (file.contains(base + ".Lnext")) {
        read(".Lnext", pending, b.l, b.geom.rows);
        read(".Rnext", pending, b.r, b.geom.cols);
      }
    }
    const Tensor counters = file.tensor("optimizer.shampoo.counters", {3});
    const Tensor valid = file.tensor("optimizer.shampoo.roots_valid", {2, int64_t(jobs_.size())});
    KD_CHECK(counters.dtype() == DType::i64 && valid.dtype() == DType::i64, file.path(),
             ": optimizer.shampoo.counters and roots_valid must be i64");
    const int64_t* c = counters.data<int64_t>();
    pending_step_ = c[0], rejected_total_ = c[1], consecutive_rejections_ = c[2];
    for (size_t j = 0; j < jobs_.size(); ++j)
      valid_[j] = uint8_t(valid.data<int64_t>()[j] != 0),
      pending_valid_[j] = uint8_t(valid.data<int64_t>()[jobs_.size() + j] != 0);
    stats_.copy_from(stats, &ctx);
    roots_.copy_from(roots, &ctx);
    if (pending_step_ >= 0) pending_.copy_from(pending, &ctx);
  }

 private:
  struct Block {
    const Param* param;
    int index;          // in the parameter's grid
    ShampooBlock geom;  // within the parameter's matrix view
    int64_t l, r;       // offsets of its L and R in the statistics (and roots) buffers
  };
  struct Job {
    int64_t offset, n;  // an n x n statistic at `offset`
  };

  static std::string block_name(const Block& b) {
    return "optimizer.shampoo." + b.param->name + "." + std::to_string(b.index);
  }
  Tensor zeros(Context& ctx, int64_t n) const {
    Tensor t = Tensor::empty({n}, dtype_, ctx);
    fill_zero(t.raw(), ctx.device(), t.nbytes(), &ctx);
    return t;
  }
  bool root_step(int64_t t) const { return t % config_.shampoo.precondition_every == 0; }
  bool stats_step(int64_t t) const { return t % config_.shampoo.statistics_every == 0; }
  bool preconditioning(int64_t t) const { return t >= config_.shampoo.start_step; }
  bool block_ready(size_t b) const { return valid_[2 * b] && valid_[2 * b + 1]; }
  InverseRootConfig root_config() const {
    InverseRootConfig c;
    c.p = 4;
    c.eps = config_.shampoo.eps;
    return c;
  }
  UpdateHyper update_hyper(const UpdateArgs& a, bool decayed) const {
    UpdateHyper h;
    h.lr = a.lr, h.weight_decay = decayed ? config_.weight_decay : 0.0;
    h.momentum = momentum_.defined() ? config_.momentum : 0.0;
    h.nesterov = config_.nesterov, h.first = a.step == 1;
    return h;
  }
  GraftHyper graft_hyper(const UpdateArgs& a) const {
    GraftHyper h;
    h.kind = graft_, h.beta1 = config_.beta1, h.beta2 = config_.beta2, h.eps = config_.eps;
    h.step = a.step;
    return h;
  }

  void install_pending(Context& ctx) {
    copy_bytes(roots_.raw(), ctx.device(), pending_.raw(), ctx.device(), roots_.nbytes(), &ctx);
    valid_ = pending_valid_;
    pending_step_ = -1;
  }

  // After a root step. Per job the owner reports (values of the other ranks are 0): whether a
  // root exists now (accepted now, or an earlier one kept), its condition number; and the
  // rejections. All summed over the ranks.
  void finish_root_step(int64_t t, double elapsed_ms, std::vector<double>& valid, std::vector<double>& conds,
                        double rejected) {
    if (comm_ && comm_->size() > 1) {
      comm_->all_reduce_host(valid.data(), int64_t(valid.size()), ReduceOp::sum);
      comm_->all_reduce_host(conds.data(), int64_t(conds.size()), ReduceOp::sum);
      comm_->all_reduce_host(&rejected, 1, ReduceOp::sum);
    }
    std::vector<uint8_t>& into = config_.shampoo.root_delay > 0 ? pending_valid_ : valid_;
    for (size_t j = 0; j < valid.size(); ++j) into[j] = valid[j] > 0 ? 1 : 0;
    rejected_total_ += int64_t(rejected);
    consecutive_rejections_ = rejected > 0 ? consecutive_rejections_ + 1 : 0;
    KD_CHECK(consecutive_rejections_ < config_.shampoo.max_rejections, "Shampoo: inverse roots were rejected at ",
             consecutive_rejections_, " root steps in a row (the last at step ", t,
             "): the statistics are too badly conditioned for the roots to converge; raise optim.shampoo_eps, lower ",
             "optim.lr, or check the gradients for NaN/Inf");
    std::vector<double> finite;
    for (double c : conds)
      if (std::isfinite(c) && c > 0) finite.push_back(c);
    std::sort(finite.begin(), finite.end());
    cond_max_ = finite.empty() ? NAN : finite.back();
    cond_median_ = finite.empty() ? NAN : finite[finite.size() / 2];
    if (config_.shampoo.root_delay > 0) pending_step_ = t;
    last_root_ms_ = elapsed_ms;
  }

  // The owners of the root jobs, and the exchange of the roots they computed: each rank packs
  // its roots into a segment of the same size, and an all-gather gives every rank every root.
  std::vector<int> owners() const {
    std::vector<double> costs;
    for (const Job& j : jobs_) costs.push_back(double(j.n) * double(j.n) * double(j.n));
    return assign_root_jobs(costs, comm_ ? comm_->size() : 1);
  }
  void exchange_roots(Context& ctx, Tensor& target, const std::vector<int>& owner) {
    if (!comm_ || comm_->size() == 1) return;
    const int ranks = comm_->size();
    std::vector<int64_t> share(size_t(ranks), 0);
    for (size_t j = 0; j < jobs_.size(); ++j) share[size_t(owner[j])] += jobs_[j].n * jobs_[j].n;
    const int64_t segment = std::max<int64_t>(1, *std::max_element(share.begin(), share.end()));
    const size_t es = dtype_size(dtype_);
    Tensor send = zeros(ctx, segment), recv = zeros(ctx, segment * ranks);
    auto move = [&](bool pack, int rank, char* seg) {
      int64_t at = 0;
      for (size_t j = 0; j < jobs_.size(); ++j) {
        if (owner[j] != rank) continue;
        char* slot = static_cast<char*>(target.raw()) + jobs_[j].offset * int64_t(es);
        const size_t bytes = size_t(jobs_[j].n * jobs_[j].n) * es;
        if (pack)
          copy_bytes(seg + at * int64_t(es), ctx.device(), slot, ctx.device(), bytes, &ctx);
        else
          copy_bytes(slot, ctx.device(), seg + at * int64_t(es), ctx.device(), bytes, &ctx);
        at += jobs_[j].n * jobs_[j].n;
      }
    };
    move(true, comm_->rank(), static_cast<char*>(send.raw()));
    KD_CHECK(comm_->accepts(ctx.device()), "shampoo: the ", comm_->transport(), " communicator cannot carry ",
             device_name(ctx.device()), " roots");
    comm_->wait(comm_->all_gather(send.raw(), recv.raw(), segment, dtype_, ctx), ctx);
    for (int r = 0; r < ranks; ++r)
      if (r != comm_->rank()) move(false, r, static_cast<char*>(recv.raw()) + int64_t(r) * segment * int64_t(es));
  }

  template <typename T>
  void step_cpu(Context& ctx, const UpdateArgs& a) {
    const ShampooConfig& s = config_.shampoo;
    const int64_t n = params_.numel(), nd = params_.decay_numel(), t = a.step;
    const T scale = T(a.grad_scale);
    const T* grad = params_.grads().data<T>();
    T *am = a_.data<T>(), *filtered = filtered_.data<T>(), *dir = direction_.data<T>();
    graft_cpu<T>(n, graft_hyper(a), scale, grad, state1_.data<T>(), state2_.defined() ? state2_.data<T>() : nullptr, am,
                 filtered);
    if (stats_step(t)) {
      const T* g = filtered;  // adagrad, sgd: the clipped gradient itself
      if (graft_ == GraftKind::adam) {
        T* sg = scaled_.data<T>();
        for (int64_t i = 0; i < n; ++i) sg[i] = scale * grad[i];
        g = sg;
      }
      T* st = stats_.data<T>();
      for (const Block& b : blocks_) {
        const int64_t ld = b.param->view_cols();
        const T* gb = g + b.param->offset + b.geom.row0 * ld + b.geom.col0;
        shampoo_stats_update_cpu<T>(b.geom.rows, b.geom.cols, gb, ld, T(s.beta2), st + b.l, st + b.r);
      }
    }
    if (root_step(t)) {
      const auto started = std::chrono::steady_clock::now();
      Tensor& target = s.root_delay > 0 ? pending_ : roots_;
      if (s.root_delay > 0) copy_bytes(pending_.raw(), Device::cpu, roots_.raw(), Device::cpu, roots_.nbytes(), &ctx);
      const std::vector<int> owner = owners();
      const int me = comm_ ? comm_->rank() : 0;
      std::vector<double> valid(jobs_.size(), 0.0), conds(jobs_.size(), 0.0);
      double rejected = 0;
      const InverseRootConfig cfg = root_config();
      for (size_t j = 0; j < jobs_.size(); ++j) {
        if (owner[j] != me) continue;
        const Job& job = jobs_[j];
        std::vector<T> x(size_t(job.n * job.n));
        const InverseRootInfo info = inverse_root_eigen_cpu(job.n, stats_.data<T>() + job.offset, cfg, x.data());
        valid[j] = valid_[j];
        if (!inverse_root_ok(info.error, 0.0f)) {
          rejected += 1;
          continue;
        }
        std::copy(x.begin(), x.end(), target.data<T>() + job.offset);
        valid[j] = 1;
        conds[j] = (info.lambda_max + info.damping) / (info.lambda_min + info.damping);
      }
      exchange_roots(ctx, target, owner);
      finish_root_step(t, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count(),
                       valid, conds, rejected);
    }
    std::copy(am, am + n, dir);
    if (preconditioning(t)) {
      const T* roots = roots_.data<T>();
      for (size_t bi = 0; bi < blocks_.size(); ++bi) {
        const Block& b = blocks_[bi];
        if (!block_ready(bi)) continue;  // no root yet: the grafted step, D = a
        const int64_t ld = b.param->view_cols(), at = b.param->offset + b.geom.row0 * ld + b.geom.col0;
        shampoo_direction_cpu<T>(b.geom.rows, b.geom.cols, roots + b.l, filtered + at, ld, roots + b.r, dir + at, ld);
        const double f = graft_scale(frobenius_norm_sq_cpu<T>(b.geom.rows, b.geom.cols, am + at, ld),
                                     frobenius_norm_sq_cpu<T>(b.geom.rows, b.geom.cols, dir + at, ld));
        for (int64_t i = 0; i < b.geom.rows; ++i)
          for (int64_t j = 0; j < b.geom.cols; ++j) dir[at + i * ld + j] = T(double(dir[at + i * ld + j]) * f);
      }
    }
    T* w = params_.values().data<T>();
    T* u = momentum_.defined() ? momentum_.data<T>() : nullptr;
    apply_update_cpu<T>(nd, update_hyper(a, true), dir, u, w);
    apply_update_cpu<T>(n - nd, update_hyper(a, false), dir + nd, u ? u + nd : nullptr, w + nd);
  }

  void step_cuda(Context& ctx, const UpdateArgs& a);

  GraftKind graft_;
  DType dtype_ = DType::f32;
  Communicator* comm_ = nullptr;
  std::vector<Block> blocks_;
  std::vector<Job> jobs_;
  int64_t stats_numel_ = 0;
  Tensor state1_, state2_, momentum_;         // graft state (m or h, v), sgd momentum
  Tensor a_, filtered_, direction_, scaled_;  // per step, laid out like the parameters
  Tensor stats_, roots_, pending_;            // every block's L and R, back to back
  int64_t pending_step_ = -1;                 // the step whose roots wait in pending_
  // Per root job: a root exists (one was accepted at some root step); a block is preconditioned
  // once both its roots exist.
  std::vector<uint8_t> valid_, pending_valid_;
  int64_t rejected_total_ = 0, consecutive_rejections_ = 0;
  double last_root_ms_ = 0, cond_max_ = NAN, cond_median_ = NAN;
};

// The same step on a GPU: fp32, the batched Newton root per size class, one launch per block for
// the statistics and the direction. Roots are computed on the compute stream here; the fixed
// delay lets them move to a side stream without changing any result.
void Shampoo::step_cuda(Context& ctx, const UpdateArgs& a) {
#if KD_HAVE_CUDA
  const CudaHandles& h = ctx.cuda_handles();
  const ShampooConfig& s = config_.shampoo;
  const int64_t n = params_.numel(), nd = params_.decay_numel(), t = a.step;
  const float* grad = params_.grads().data<float>();
  float *am = a_.data<float>(), *filtered = filtered_.data<float>(), *dir = direction_.data<float>();
  graft_cuda(h, n, graft_hyper(a), float(a.grad_scale), grad, state1_.data<float>(),
             state2_.defined() ? state2_.data<float>() : nullptr, am, filtered);
  if (stats_step(t)) {
    const float* g = filtered;
    if (graft_ == GraftKind::adam) {
      copy_bytes(scaled_.raw(), Device::cuda, grad, Device::cuda, size_t(n) * sizeof(float), &ctx);
      scale_cuda(h, n, float(a.grad_scale), scaled_.data<float>());
      g = scaled_.data<float>();
    }
    float* st = stats_.data<float>();
    for (const Block& b : blocks_) {
      const int64_t ld = b.param->view_cols();
      shampoo_stats_update_cuda(h, 1, b.geom.rows, b.geom.cols, g + b.param->offset + b.geom.row0 * ld + b.geom.col0,
                                ld, 0, float(s.beta2), st + b.l, st + b.r);
    }
  }
  if (root_step(t)) {
    ctx.synchronize();
    const auto started = std::chrono::steady_clock::now();
    Tensor& target = s.root_delay > 0 ? pending_ : roots_;
    if (s.root_delay > 0) copy_bytes(pending_.raw(), Device::cuda, roots_.raw(), Device::cuda, roots_.nbytes(), &ctx);
    const std::vector<int> owner = owners();
    const int me = comm_ ? comm_->rank() : 0;
    std::vector<double> valid(jobs_.size(), 0.0), conds(jobs_.size(), 0.0);
    double rejected = 0;
    std::vector<int64_t> sizes;
    for (const Job& j : jobs_) sizes.push_back(j.n);
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
    const InverseRootConfig cfg = root_config();
    for (int64_t size : sizes) {
      std::vector<size_t> mine;
      for (size_t j = 0; j < jobs_.size(); ++j)
        if (jobs_[j].n == size && owner[j] == me) mine.push_back(j);
      if (mine.empty()) continue;
      const int64_t nn = size * size, batch = int64_t(mine.size());
      // Stack the size class: statistics in, current roots as the fallback, Newton candidates out.
      Tensor in = Tensor::empty({batch * nn}, DType::f32, ctx), kept = Tensor::empty({batch * nn}, DType::f32, ctx);
      Tensor out = Tensor::empty({batch * nn}, DType::f32, ctx), errors = Tensor::empty({batch}, DType::f32, ctx);
      for (int64_t k = 0; k < batch; ++k) {
        const int64_t off = jobs_[mine[size_t(k)]].offset;
        copy_bytes(in.data<float>() + k * nn, Device::cuda, stats_.data<float>() + off, Device::cuda,
                   size_t(nn) * sizeof(float), &ctx);
        copy_bytes(kept.data<float>() + k * nn, Device::cuda, target.data<float>() + off, Device::cuda,
                   size_t(nn) * sizeof(float), &ctx);
      }
      inverse_root_newton_cuda(h, size, batch, in.data<float>(), cfg, out.data<float>(), errors.data<float>(), nullptr);
      inverse_root_accept_cuda(h, size, batch, out.data<float>(), errors.data<float>(), kMaxRootError,
                               kept.data<float>());
      for (int64_t k = 0; k < batch; ++k)
        copy_bytes(target.data<float>() + jobs_[mine[size_t(k)]].offset, Device::cuda, kept.data<float>() + k * nn,
                   Device::cuda, size_t(nn) * sizeof(float), &ctx);
      const Tensor host_errors = errors.to(Device::cpu, &ctx);
      for (int64_t k = 0; k < batch; ++k) {
        const size_t j = mine[size_t(k)];
        const bool ok = inverse_root_ok(host_errors.data<float>()[k], kMaxRootError);
        rejected += ok ? 0 : 1;
        valid[j] = ok || valid_[j] ? 1 : 0;
        conds[j] = 0;  // the GPU path does not compute the eigenvalues
      }
    }
    exchange_roots(ctx, target, owner);
    ctx.synchronize();
    finish_root_step(t, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count(),
                     valid, conds, rejected);
  }
  copy_bytes(dir, Device::cuda, am, Device::cuda, size_t(n) * sizeof(float), &ctx);
  if (preconditioning(t)) {
    const float* roots = roots_.data<float>();
    Tensor norms = Tensor::empty({2}, DType::f64, ctx);
    double* graft_sq = norms.data<double>();
    for (size_t bi = 0; bi < blocks_.size(); ++bi) {
      const Block& b = blocks_[bi];
      if (!block_ready(bi)) continue;
      const int64_t ld = b.param->view_cols(), at = b.param->offset + b.geom.row0 * ld + b.geom.col0;
      shampoo_direction_cuda(h, 1, b.geom.rows, b.geom.cols, roots + b.l, filtered + at, ld, 0, roots + b.r, dir + at,
                             ld, 0);
      frobenius_norm_sq_cuda(h, 1, b.geom.rows, b.geom.cols, am + at, ld, 0, graft_sq);
      frobenius_norm_sq_cuda(h, 1, b.geom.rows, b.geom.cols, dir + at, ld, 0, graft_sq + 1);
      graft_rescale_cuda(h, 1, b.geom.rows, b.geom.cols, graft_sq, graft_sq + 1, dir + at, ld, 0);
    }
  }
  float* w = params_.values().data<float>();
  float* u = momentum_.defined() ? momentum_.data<float>() : nullptr;
  bf16* wc = params_.compute_values().data<bf16>();
  apply_update_cuda(h, nd, update_hyper(a, true), dir, u, w, wc);
  apply_update_cuda(h, n - nd, update_hyper(a, false), dir + nd, u ? u + nd : nullptr, w + nd, wc + nd);
#else
  (void)ctx, (void)a;
  KD_FAIL("shampoo: built without CUDA");
#endif
}

}  // namespace

std::unique_ptr<Optimizer> make_shampoo(ParamStore& params, const OptimizerConfig& config,
                                        const ScheduleConfig& schedule, Context& ctx) {
  return std::make_unique<Shampoo>(params, config, schedule, ctx);
}

}  // namespace kd
