#include "train/step_graph.h"

#include "engine/fault_injection.h"
#include "kernels/step_stats.h"

namespace kd {

namespace {

// Every element of the model's host-side buffers (counters), in order, as doubles.
std::vector<double> read_counters(Model& model) {
  std::vector<double> out;
  for (const Param& p : model.params().buffers()) {
    if (!p.host) continue;
    for (int64_t i = 0; i < p.value.numel(); ++i)
      out.push_back(p.value.dtype() == DType::f64   ? p.value.data<double>()[i]
                    : p.value.dtype() == DType::i64 ? double(p.value.data<int64_t>()[i])
                                                    : double(p.value.data<float>()[i]));
  }
  return out;
}

// How much each counter moved since `before` (read_counters' order): now - before.
std::vector<double> counters_since(Model& model, const std::vector<double>& before) {
  std::vector<double> moved = read_counters(model);
  for (size_t i = 0; i < moved.size(); ++i) moved[i] -= before[i];
  return moved;
}

void add_to_counters(Model& model, const std::vector<double>& delta) {
  size_t k = 0;
  for (Param& p : model.params().buffers()) {
    if (!p.host) continue;
    for (int64_t i = 0; i < p.value.numel(); ++i, ++k) {
      if (p.value.dtype() == DType::f64)
        p.value.data<double>()[i] += delta[k];
      else if (p.value.dtype() == DType::i64)
        p.value.data<int64_t>()[i] += int64_t(delta[k]);
      else
        p.value.data<float>()[i] += float(delta[k]);
    }
  }
}

// Why the step cannot be captured here ("" when it can).
std::string capture_refused(const Communicator& comm, const Context& ctx, bool stats_on_device) {
  if (!stats_on_device) return "the step's statistics are read on the host every step (run.step_stats = host)";
  if (comm.size() > 1 && ctx.is_cuda() && !comm.captures_collectives())
    return std::string("the ") + comm.transport() + " collectives cannot be captured";
  if (fault::nonfinite_planned()) return "KD_FAULT injects non-finite values from the host";
  return "";
}

}  // namespace

bool step_graph_on(const std::string& setting, const Communicator& comm, const Context& ctx, bool stats_on_device,
                   std::string* why_not) {
  KD_CHECK(setting == "auto" || setting == "on" || setting == "off", "run.cuda_graph is '", setting,
           "' (use auto, on or off)");
  std::string why = capture_refused(comm, ctx, stats_on_device);
  KD_CHECK(setting != "on" || why.empty(), "run.cuda_graph = on, but ", why);
  // auto: one rank only until the captured collectives have run on GPUs (on: several too).
  if (why.empty() && comm.size() > 1)
    why = "more than one rank (run.cuda_graph = on captures the NCCL collectives too)";
  const bool auto_on = setting == "auto" && ctx.is_cuda() && why.empty();
  if (why_not) *why_not = setting == "auto" && ctx.is_cuda() ? why : "";
  return setting == "on" || auto_on;
}

StepGraph::StepGraph(StepRunner& runner, Communicator& comm, Context& ctx, int64_t eager_steps)
    : runner_(runner), comm_(comm), eager_steps_(eager_steps), block_(Tensor::empty({kStatWidth}, DType::f64, ctx)) {
  KD_CHECK(eager_steps >= 1, "step graph: at least one uncaptured step must come first (autotuning, the pool)");
}

std::string StepGraph::take_message() {
  std::string m;
  m.swap(message_);
  return m;
}

// `value` copied into `slot`, which keeps its address while the shape stays (a new shape: new
// inputs, and the graph, whose kernels read the old ones, goes).
void StepGraph::keep(Context& ctx, Tensor& slot, const Tensor& value) {
  if (!value.defined()) {
    KD_CHECK(!slot.defined(), "step graph: an input of earlier steps is missing at step ", step_);
    return;
  }
  if (!slot.defined() || slot.shape() != value.shape() || slot.dtype() != value.dtype()) {
    graph_.reset(), steps_ = 0;  // (also for an input new this step: the graph does not read it)
    slot = Tensor::empty(value.shape(), value.dtype(), ctx);
  }
  slot.copy_from(value, &ctx);
}

void StepGraph::enqueue_body(Context& ctx) {
  StepResult unused;
  runner_.begin_step();
  for (size_t k = 0; k < inputs_.size(); ++k)
    runner_.compute_micro_batch(ctx, inputs_[k], int64_t(k), unused, nullptr, block_.data<double>());
  runner_.end_step(ctx, step_);
  // The job-wide loss sum and agreement before the gate reads them (as the loop does uncaptured).
  if (comm_.size() > 1) comm_.wait(comm_.all_reduce(block_.data<double>(), 2, DType::f64, ReduceOp::sum, ctx), ctx);
  if (optimizer_in_graph()) runner_.optimizer().enqueue_deferred(ctx, block_.data<double>());
}

// A launch that fails drops the graph (the next step does not launch it again) and ends the run
// with the error: the device may be in a bad state, and with several ranks the others already
// launched theirs.
void StepGraph::launch(Context& ctx, const std::string& what) {
  try {
    graph_->launch();
  } catch (const Error&) {
    graph_.reset();
    throw;
  }
  comm_.watch_launch(ctx, what);  // its collectives, as one
}

bool StepGraph::room_for_an_uncaptured_step(Context& ctx) {
  if (!graph_ || !ctx.is_cuda()) return true;
  // (The graph's own idle blocks are cached too, but no uncaptured step may have them.)
  const size_t available = device_free_bytes(ctx.device_index()) + ctx.pool().bytes_cached_shared();
  const size_t needed = graph_->private_bytes() + graph_->private_bytes() / 4;  // (+25%: a different order)
  const bool room = available >= needed;
  if (!room && !told_no_room_) {
    told_no_room_ = true;
    message_ = "the profiled steps are replayed like the others, without a per-phase time: an uncaptured step needs " +
               std::to_string(needed >> 20) + " MiB beside the graph's, " + std::to_string(available >> 20) +
               " MiB are free (kd bench times the phases; run.cuda_graph = off times them in the run)";
  }
  return room;
}

// Adam and SGD gate on the device and run the same kernels every step; Shampoo reads its gate
// back and varies its work (statistics, root steps), so it runs after the graph, uncaptured.
bool StepGraph::optimizer_in_graph() const { return runner_.optimizer().gates_on_device(); }

StepResult StepGraph::run(Context& ctx, const RankBatch& batch, double* stats) {
  runner_.check_batch(batch);
  step_ = batch.step;
  StepResult r;
  const int64_t micro = runner_.config().accumulate;
  inputs_.resize(size_t(micro));
  for (int64_t k = 0; k < micro; ++k) {
    const MicroBatchInputs in = runner_.render_micro_batch(ctx, batch, k, r);
    MicroBatchInputs& kept = inputs_[size_t(k)];
    kept.step = in.step, kept.rows = in.rows;
    keep(ctx, kept.student, in.student);
    if (kept.teachers.size() != in.teachers.size()) graph_.reset(), steps_ = 0, kept.teachers.clear();
    kept.teachers.resize(in.teachers.size());
    for (size_t t = 0; t < in.teachers.size(); ++t) keep(ctx, kept.teachers[t], in.teachers[t]);
    keep(ctx, kept.fixed_logits, in.fixed_logits);
    keep(ctx, kept.labels, in.labels);
    r.rows += in.rows;
  }
  fill_zero(block_.raw(), ctx.device(), block_.nbytes(), &ctx);
  r.optim.lr = runner_.optimizer().begin_deferred(ctx, block_.data<double>());
  ++steps_;
  const std::string launch_name = "the captured step (step " + std::to_string(batch.step) + ")";
  if (graph_) {
    launch(ctx, launch_name);
    add_to_counters(runner_.student(), counters_per_step_);
  } else if (ctx.is_cuda() && !capture_failed_ && steps_ > eager_steps_) {
    const std::vector<double> before = read_counters(runner_.student());
    std::string why_not;
    try {
      graph_ = CudaGraph::capture(ctx, [&] { enqueue_body(ctx); });
    } catch (const Error& e) {
      why_not = e.what();
    }
    // Every rank launches its graph, or none does: a collective captured on one rank and issued
    // eagerly on another would pair the wrong operations (NCCL's rule for graphs). The capture
    // happens at the same step everywhere, so this host all-reduce is matched.
    if (comm_.size() > 1) {
      double failed = why_not.empty() ? 0.0 : 1.0;
      comm_.all_reduce_host(&failed, 1, ReduceOp::sum);
      if (failed > 0 && why_not.empty())
        why_not =
            "the capture failed on " + std::to_string(int(failed)) + " of " + std::to_string(comm_.size()) + " ranks";
    }
    if (why_not.empty()) {
      counters_per_step_ = counters_since(runner_.student(), before);
      message_ = "the step is a CUDA graph from step " + std::to_string(batch.step) + " on (" +
                 std::to_string(graph_->nodes()) + " nodes, " + std::to_string(graph_->private_bytes() >> 20) +
                 " MiB of activations its own; run.cuda_graph = off runs it uncaptured)";
      launch(ctx, launch_name);
    } else {
      graph_.reset();
      capture_failed_ = true;
      comm_.abandon_captured();
      message_ = "warning: " + why_not + "; the step runs uncaptured (run.cuda_graph = off hides this)";
      std::vector<double> undo = counters_since(runner_.student(), before);
      for (double& d : undo) d = -d;
      add_to_counters(runner_.student(), undo);  // (the abandoned capture's host code counted)
      enqueue_body(ctx);                         // (nothing of the abandoned capture ran)
    }
  } else {
    enqueue_body(ctx);
  }
  if (!optimizer_in_graph()) runner_.optimizer().enqueue_deferred(ctx, block_.data<double>());
  copy_bytes(stats, ctx.device(), block_.raw(), ctx.device(), block_.nbytes(), &ctx);
  return r;
}

}  // namespace kd
