// AdamW and SGD with momentum: one flat pass over the decayed parameters (with weight decay) and
// one over the rest, element formulas in kernels/optim.h; state in flat buffers beside the
// parameters, saved per parameter name.
#include "engine/optim/kinds.h"
#include "engine/safetensors.h"
#include "kernels/optim.h"

namespace kd {

namespace {

class AdamW final : public Optimizer {
 public:
  AdamW(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule, Context& ctx)
      : Optimizer(params, config, schedule, ctx) {
    KD_CHECK(ctx.param_dtype() == DType::f32, "adam: parameters must be f32, not ", dtype_name(ctx.param_dtype()));
    m_ = make_flat_state(ctx);
    v_ = make_flat_state(ctx);
  }
  const char* kind() const override { return "adam"; }
  bool gates_on_device() const override { return true; }

 protected:
  void update(Context& ctx, const UpdateArgs& a) override {
    const int64_t n = params_.numel(), nd = params_.decay_numel();
    AdamHyper h;
    h.lr = float(a.lr), h.beta1 = float(config_.beta1), h.beta2 = float(config_.beta2), h.eps = float(config_.eps);
    h.step = a.step;
    const float wd = float(config_.weight_decay);
    float *w = params_.values().data<float>(), *g = params_.grads().data<float>();
    float *m = m_.data<float>(), *v = v_.data<float>();
    if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
      bf16* wc = params_.compute_values().data<bf16>();
      adam_update_cuda(ctx.cuda_handles(), nd, h, wd, float(a.grad_scale), w, g, m, v, wc, a.step_stats);
      adam_update_cuda(ctx.cuda_handles(), n - nd, h, 0.0f, float(a.grad_scale), w + nd, g + nd, m + nd, v + nd,
                       wc + nd, a.step_stats);
#endif
    } else {
      adam_update_cpu(nd, h, wd, float(a.grad_scale), w, g, m, v);
      adam_update_cpu(n - nd, h, 0.0f, float(a.grad_scale), w + nd, g + nd, m + nd, v + nd);
    }
  }
  void save_state(SafetensorsWriter& out, Context& ctx) const override {
    save_flat_state(out, ctx, "m", m_);
    save_flat_state(out, ctx, "v", v_);
  }
  void load_state(const SafetensorsFile& file, Context& ctx) override {
    load_flat_state(file, ctx, "m", m_);
    load_flat_state(file, ctx, "v", v_);
  }

 private:
  Tensor m_, v_;  // first and second moments
};

class Sgd final : public Optimizer {
 public:
  Sgd(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule, Context& ctx)
      : Optimizer(params, config, schedule, ctx) {
    KD_CHECK(ctx.param_dtype() == DType::f32, "sgd: parameters must be f32, not ", dtype_name(ctx.param_dtype()));
    buf_ = make_flat_state(ctx);
  }
  const char* kind() const override { return "sgd"; }
  bool gates_on_device() const override { return true; }

 protected:
  void update(Context& ctx, const UpdateArgs& a) override {
    const int64_t n = params_.numel(), nd = params_.decay_numel();
    SgdHyper h;
    h.lr = float(a.lr), h.momentum = float(config_.momentum), h.nesterov = config_.nesterov, h.step = a.step;
    const float wd = float(config_.weight_decay);
    float *w = params_.values().data<float>(), *g = params_.grads().data<float>(), *buf = buf_.data<float>();
    if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
      bf16* wc = params_.compute_values().data<bf16>();
      sgd_update_cuda(ctx.cuda_handles(), nd, h, wd, float(a.grad_scale), w, g, buf, wc, a.step_stats);
      sgd_update_cuda(ctx.cuda_handles(), n - nd, h, 0.0f, float(a.grad_scale), w + nd, g + nd, buf + nd, wc + nd,
                      a.step_stats);
#endif
    } else {
      sgd_update_cpu(nd, h, wd, float(a.grad_scale), w, g, buf);
      sgd_update_cpu(n - nd, h, 0.0f, float(a.grad_scale), w + nd, g + nd, buf + nd);
    }
  }
  // The momentum buffer, saved as "m" (the first round's name).
  void save_state(SafetensorsWriter& out, Context& ctx) const override { save_flat_state(out, ctx, "m", buf_); }
  void load_state(const SafetensorsFile& file, Context& ctx) override { load_flat_state(file, ctx, "m", buf_); }

 private:
  Tensor buf_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adamw(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule,
                                      Context& ctx) {
  return std::make_unique<AdamW>(params, config, schedule, ctx);
}

std::unique_ptr<Optimizer> make_sgd(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule,
                                    Context& ctx) {
  return std::make_unique<Sgd>(params, config, schedule, ctx);
}

}  // namespace kd
