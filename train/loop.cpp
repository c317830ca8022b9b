#include "train/loop.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "engine/fault_injection.h"
#include "engine/readback.h"
#include "kernels/step_stats.h"
#include "train/run_log.h"
#include "train/step_graph.h"

namespace kd {

namespace {

std::atomic<int> g_stop_signal{0};

// Test hook: KD_DEBUG_SIGSTOP=<rank>:<step> makes that rank stop itself (SIGSTOP, a hang that
// mpirun does not notice) when it reaches that step, so tests can check hang detection.
void maybe_stop_for_test(const Communicator& comm, int64_t step) {
  static const char* spec = std::getenv("KD_DEBUG_SIGSTOP");
  if (!spec) return;
  long long rank = -1, at = -1;
  if (std::sscanf(spec, "%lld:%lld", &rank, &at) == 2 && rank == comm.rank() && at == step) std::raise(SIGSTOP);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// "the loss is NaN at step 7 (lr 0.01), in the teacher forward (the teachers' logits are not finite)"
std::string nonfinite_report(double loss, const StepResult& r, int64_t step, std::string phase) {
  const bool loss_bad = !std::isfinite(loss);
  const double value = loss_bad ? loss : r.optim.grad_norm;
  if (phase.empty())
    phase = loss_bad ? "the loss (its inputs are finite)" : "the backward pass (the student's gradients)";
  return std::string(loss_bad ? "the loss" : "the gradient norm") + " is " + (std::isnan(value) ? "NaN" : "infinite") +
         " at step " + std::to_string(step) + " (lr " + json_number(r.optim.lr) + "), in " + phase;
}

}  // namespace

void request_stop(int signal_number) { g_stop_signal.store(signal_number); }
int stop_requested() { return g_stop_signal.load(); }

RankBatch rank_batch(Batch&& batch, int64_t slot0, bool has_partner) {
  RankBatch r;
  r.step = batch.step;
  r.slot0 = slot0;
  r.has_partner = has_partner;
  const size_t slots = batch.size() - (has_partner ? 1 : 0);
  KD_CHECK(batch.size() >= 1 + (has_partner ? 1 : 0), "batch ", batch.step, " has no images");
  r.images = std::move(batch.images);
  r.labels.assign(batch.labels.begin(), batch.labels.begin() + std::ptrdiff_t(slots));
  r.indices.assign(batch.indices.begin(), batch.indices.begin() + std::ptrdiff_t(slots));
  return r;
}

namespace {

// A step whose statistics are still on the device (run.step_stats = device): what the host knew
// when it ran, until the ledger is read.
struct PendingStep {
  int64_t step = 0;
  double lr = 0, data_wait = 0, seconds = 0;  // seconds: host time of the step (plus a read's wait)
  float mixup_lambda = 1;
  std::vector<std::pair<std::string, double>> phases_ms;  // a profiled step's
};

// The device rows of a window of steps (kernels/step_stats.h). A window's rows go to the host
// without a wait (AsyncReadback: a pinned buffer and an event, two windows in flight at most) and
// are zeroed on the device right after the copy, in stream order, for the next window.
class StepLedger {
 public:
  StepLedger(Context& ctx, int64_t capacity)
      : ctx_(ctx), rows_(Tensor::empty({capacity, kStatWidth}, DType::f64, ctx)) {
    fill_zero(rows_.raw(), ctx_.device(), rows_.nbytes(), &ctx_);
    for (Read& r : reads_) r.copy = std::make_unique<AsyncReadback>(ctx);
  }
  int64_t capacity() const { return rows_.dim(0); }
  double* row(int64_t i) const { return rows_.data<double>() + i * kStatWidth; }
  bool full() const { return in_flight_ == 2; }
  bool reading() const { return in_flight_ > 0; }
  // Queues the copy of the rows of `steps` (the window so far; emptied) to the host. Not full().
  void start_read(std::vector<PendingStep>& steps) {
    KD_CHECK(!full(), "step ledger: two windows are in flight already");
    Read& r = reads_[(oldest_ + in_flight_) % 2];
    r.copy->start(rows_.raw(), steps.size() * kStatWidth * sizeof(double));
    r.steps.swap(steps);
    steps.clear();
    fill_zero(rows_.raw(), ctx_.device(), rows_.nbytes(), &ctx_);
    ++in_flight_;
  }
  bool oldest_arrived() const { return reads_[oldest_].copy->ready(); }
  // The oldest window in flight (waiting for its copy if it has not arrived): its steps and their
  // rows, in order.
  std::pair<std::vector<PendingStep>, std::vector<double>> take_oldest() {
    KD_CHECK(reading(), "step ledger: no window in flight");
    Read& r = reads_[oldest_];
    const double* rows = static_cast<const double*>(r.copy->wait());
    std::vector<double> host(rows, rows + r.steps.size() * kStatWidth);
    std::vector<PendingStep> steps;
    steps.swap(r.steps);
    oldest_ = (oldest_ + 1) % 2, --in_flight_;
    return {std::move(steps), std::move(host)};
  }

 private:
  struct Read {
    std::unique_ptr<AsyncReadback> copy;
    std::vector<PendingStep> steps;
  };
  Context& ctx_;
  Tensor rows_;
  Read reads_[2];
  int oldest_ = 0, in_flight_ = 0;
};

}  // namespace

bool step_stats_on_device(const std::string& setting, const Context& ctx, const Communicator& comm) {
  KD_CHECK(setting == "auto" || setting == "device" || setting == "host", "run.step_stats is '", setting,
           "' (use auto, device or host)");
  const bool collectives_ok = comm.size() == 1 || comm.accepts(ctx.device());
  if (setting == "device") {
    KD_CHECK(collectives_ok, "run.step_stats = device: the ", comm.transport(),
             " collectives cannot read this device's memory (use run.step_stats = host)");
    return true;
  }
  return setting == "auto" && ctx.is_cuda() && collectives_ok;
}

TrainResult run_loop(Context& ctx, Communicator& comm, StepRunner& runner, Loader& loader, EpochSampler& sampler,
                     const LoopSettings& s, const LoopHooks& hooks, const std::vector<LoopObserver*>& observers) {
  auto message = [&](const std::string& line) {
    for (LoopObserver* o : observers) o->message(line);
  };
  const bool distill = runner.config().mode == RunMode::distill;
  const bool has_partner = runner.config().needs_partner();
  const double rows = double(runner.config().global_batch);
  TrainResult result;
  // Window sums feed the metrics lines; rates exclude evaluation time.
  double window_loss = 0, window_agree = 0, window_rows = 0, train_seconds = 0, window_seconds = 0;
  double window_data_wait = 0;  // seconds the step waited for the loader (backpressure)
  int64_t images_trained = 0;
  std::unique_ptr<PhaseTimer> timer;
  if (s.profile_phases) timer = std::make_unique<PhaseTimer>(ctx);
  int64_t skipped = s.skipped_nonfinite ? *s.skipped_nonfinite : 0;
  std::unique_ptr<StepLedger> ledger;
  if (s.stats_on_device) ledger = std::make_unique<StepLedger>(ctx, std::min<int64_t>(s.log_every, 1024));
  std::unique_ptr<StepGraph> graph;
  if (s.step_graph) {
    KD_CHECK(ledger, "the step as a CUDA graph needs its statistics on the device (run.step_stats)");
    graph = std::make_unique<StepGraph>(runner, comm, ctx);
  }
  std::vector<PendingStep> pending;

  // Where a step went non-finite, job-wide: each rank's flags name only its own logits, so with
  // several ranks the first rank (in rank order) that saw non-finite logits is named. Only for a
  // step that was not applied, which every rank knows alike (the loss and gradient norm are the
  // job's), so the host all-gather is matched.
  auto job_phase = [&](const std::string& mine) {
    if (comm.size() == 1) return mine;
    const std::vector<std::string> all = comm.all_gather_host(mine);
    for (size_t r = 0; r < all.size(); ++r)
      if (!all[r].empty()) return all[r] + " on rank " + std::to_string(r);
    return std::string();
  };
  // What the host does with a step once its loss and gradient norm are known: the non-finite
  // policy, the window sums and the observers. False: the run diverged (result filled in).
  auto account = [&](const PendingStep& p, double loss, double agree, double grad_norm, bool applied,
                     const std::string& phase) {
    if (!applied) {
      StepResult r;
      r.optim.lr = p.lr, r.optim.grad_norm = grad_norm;
      const std::string what = nonfinite_report(loss, r, p.step, job_phase(phase));
      if (skipped < s.skip_nonfinite) {
        if (!ledger) runner.optimizer().skip_step(ctx);  // (the device path counted it already)
        ++skipped, ++result.skipped_nonfinite;
        if (s.skipped_nonfinite) *s.skipped_nonfinite = skipped;
        message("warning: " + what + "; the step is skipped without an update (" + std::to_string(skipped) +
                " of run.skip_nonfinite = " + std::to_string(s.skip_nonfinite) + ")");
      } else {
        const auto good = hooks.last_good_checkpoint();
        message("error: " + what + "; stopping. " +
                (good ? "The last good checkpoint is " + *good : std::string("No checkpoint was written yet.")) +
                " Lower optim.lr or check the data" +
                (s.skip_nonfinite > 0
                     ? " (" + std::to_string(skipped) +
                           " step(s) skipped already, run.skip_nonfinite = " + std::to_string(s.skip_nonfinite) + ")."
                     : "; run.skip_nonfinite = N skips up to N such steps."));
        result.status = TrainResult::Status::diverged;
        result.steps = p.step;
        return false;
      }
    }
    train_seconds += p.seconds, window_seconds += p.seconds;
    window_data_wait += p.data_wait;
    if (applied) window_loss += loss * rows, window_agree += agree, window_rows += rows;
    images_trained += int64_t(rows);
    const int64_t done = p.step + 1;
    StepRecord rec;
    rec.step = done, rec.total = s.total_steps, rec.epoch = sampler.epoch_of(done);
    rec.loss = loss, rec.lr = p.lr, rec.grad_norm = grad_norm;
    rec.images_per_s = window_rows / std::max(window_seconds, 1e-9);
    rec.eta_s = double(s.total_steps - done) * train_seconds / double(done - s.start_step);
    rec.distill = distill, rec.mixup_lambda = p.mixup_lambda, rec.bad_images = loader.bad_images();
    rec.skipped_nonfinite = skipped;
    for (LoopObserver* o : observers) o->step(rec);
    if (done % s.log_every == 0 || done == s.total_steps) {
      rec.loss = window_loss / window_rows;
      rec.train_agreement = window_agree / window_rows;
      rec.extra = runner.optimizer().metrics();
      for (const auto& [phase, ms] : p.phases_ms) rec.extra.emplace_back("ms_" + phase, ms);
      rec.data_wait_share = std::min(1.0, window_data_wait / std::max(window_seconds, 1e-9));
      for (LoopObserver* o : observers) o->logged(rec);
      window_loss = window_agree = window_rows = window_seconds = window_data_wait = 0;
    }
    return true;
  };
  // The oldest window read from the ledger (waiting for it if it has not arrived), accounted for
  // in order. False: the run diverged.
  auto account_oldest = [&]() {
    const auto t = std::chrono::steady_clock::now();
    auto [steps, stats] = ledger->take_oldest();
    steps.back().seconds += seconds_since(t);
    for (size_t i = 0; i < steps.size(); ++i) {
      const double* row = stats.data() + i * kStatWidth;
      const bool applied = row[kStatApplied] != 0;
      if (!account(steps[i], row[kStatLossSum] / rows, row[kStatAgree], std::sqrt(row[kStatGradSumSq]), applied,
                   applied ? "" : StepRunner::nonfinite_phase(row)))
        return false;
    }
    return true;
  };
  // The window so far on its way to the host, without a wait (unless two are in flight already).
  auto start_read = [&]() {
    if (pending.empty()) return true;
    if (ledger->full() && !account_oldest()) return false;
    ledger->start_read(pending);
    return true;
  };
  // The windows that have arrived, accounted for (no wait).
  auto account_arrived = [&]() {
    while (ledger->reading() && ledger->oldest_arrived())
      if (!account_oldest()) return false;
    return true;
  };
  // Every step so far accounted for (one wait for the device).
  auto drain = [&]() {
    if (!start_read()) return false;
    while (ledger->reading())
      if (!account_oldest()) return false;
    return true;
  };

  for (int64_t step = s.start_step; step < s.total_steps; ++step) {
    maybe_stop_for_test(comm, step);
    fault::point("loop.step");
    const auto step_start = std::chrono::steady_clock::now();
    std::optional<Batch> batch = loader.next();
    PendingStep p;
    p.step = step;
    p.data_wait = seconds_since(step_start);
    KD_CHECK(batch.has_value(), "the data loader ended early at step ", step);
    const RankBatch rb = rank_batch(std::move(*batch), sampler.first_slot(), has_partner);
    // The window's last step is profiled, so its record carries the phases it measured (the
    // optimizer's phase too: the timer stops in update()).
    // (Beside a replaying graph only where memory holds a second step's activations.)
    const bool profiling = timer && ((step + 1) % s.log_every == 0 || step + 1 == s.total_steps) &&
                           (!graph || graph->room_for_an_uncaptured_step(ctx));
    if (profiling) timer->reset();
    double* stats = ledger ? ledger->row(int64_t(pending.size())) : nullptr;
    // A profiled step runs uncaptured: its phases are timed between launches.
    const bool graphed = graph && !profiling;
    StepResult r = graphed ? graph->run(ctx, rb, stats)
                           : runner.forward_backward(ctx, rb, profiling ? timer.get() : nullptr, stats);
    if (graph)
      if (const std::string m = graph->take_message(); !m.empty()) message(m);
    p.mixup_lambda = r.mixup_lambda;
    // One host all-reduce carries what every rank must agree on: whether any rank was asked to
    // stop and, when the statistics are read every step, the global loss and agreement (NaN
    // anywhere makes the sum NaN). On the device path the loss sum and agreement are summed over
    // the ranks on the device, before the optimizer's gate reads them.
    const int my_signal = stop_requested();
    double control[3] = {my_signal ? 1.0 : 0.0, r.loss_sum, double(r.agree_top1)};
    comm.all_reduce_host(control, ledger ? 1 : 3, ReduceOp::sum);
    const bool signalled = control[0] > 0;
    double loss = control[1] / rows;
    if (graphed) {
      // (reduced over the ranks and updated in the step graph)
    } else if (ledger) {
      if (comm.size() > 1) comm.wait(comm.all_reduce(stats, 2, DType::f64, ReduceOp::sum, ctx), ctx);
      runner.update(ctx, r, profiling ? timer.get() : nullptr, stats);
    } else if (std::isfinite(loss)) {
      // The update happens only when the loss is finite everywhere (the optimizer itself refuses
      // non-finite gradients), so a skipped step leaves weights and optimizer state as they were.
      runner.update(ctx, r, profiling ? timer.get() : nullptr);
    } else {
      r.optim.lr = runner.optimizer().scheduled_lr_now();
    }
    p.lr = r.optim.lr;
    if (profiling) {
      timer->stop();  // (update() stops it; a skipped update does not)
      p.phases_ms = {{"data_wait", 1e3 * p.data_wait}};
      for (const auto& phase : timer->totals_ms()) p.phases_ms.push_back(phase);
    }
    result.final_lr = r.optim.lr;
    result.bad_images = loader.bad_images();
    result.bad_images_by_kind = loader.bad_images_by_kind();
    const int64_t done = step + 1;
    const bool budget_done = s.stop_after > 0 && done - s.start_step >= s.stop_after && done < s.total_steps;
    const bool stopping = signalled || budget_done;
    const bool checkpoint_due = s.checkpoint_every > 0 && done % s.checkpoint_every == 0 && done < s.total_steps;
    const bool eval_due = s.eval_every > 0 && done % s.eval_every == 0 && done < s.total_steps;
    p.seconds = seconds_since(step_start);
    if (ledger) {
      // The statistics of each log window go to the host without a wait, and are accounted for
      // once they arrived; before anything that must not follow an unnoticed divergence (a
      // checkpoint, an evaluation, a stop, the end), every step's are read and accounted for.
      pending.push_back(p);
      const bool must_read = done == s.total_steps || stopping || checkpoint_due || eval_due;
      const bool window_end = done % s.log_every == 0 || int64_t(pending.size()) == ledger->capacity();
      // With several ranks, a window is accounted for only at points every rank reaches at the
      // same step (the ledger full, or a drain): whether a copy has arrived yet differs between
      // ranks, and a divergence noticed earlier on one would end its loop while the others go on
      // into a collective it never joins.
      const bool poll = comm.size() == 1;
      const bool going_on = must_read ? drain() : (!window_end || start_read()) && (!poll || account_arrived());
      if (!going_on) return result;
    } else {
      const bool applied = std::isfinite(loss) && r.optim.finite;
      const std::string phase = applied ? "" : runner.nonfinite_phase(ctx);
      if (!account(p, loss, control[2], r.optim.grad_norm, applied, phase)) return result;
    }
    if (checkpoint_due && !stopping) {
      // A checkpoint that cannot be written (a full disk) must not end a long run: the previous
      // one stays valid, and the next one tries again.
      try {
        const std::string path = hooks.save_checkpoint(done);
        for (LoopObserver* o : observers) o->checkpointed(done, path);
      } catch (const Error& e) {
        ++result.checkpoint_failures;
        const auto good = hooks.last_good_checkpoint();
        message("warning: the checkpoint of step " + std::to_string(done) + " was not saved: " + e.what() + "; " +
                (good ? "the last good checkpoint is still " + *good : std::string("there is no earlier checkpoint")) +
                "; training goes on and tries again at step " + std::to_string(done + s.checkpoint_every) + " (" +
                std::to_string(result.checkpoint_failures) + " checkpoint(s) failed so far)");
      }
    }
    if (eval_due) {
      const EvalResult e = hooks.evaluate(done);
      if (!e.interrupted)  // a signal cut it short: the next step's agreement stops the run
        for (LoopObserver* o : observers) o->evaluated(done, sampler.epoch_of(done), e);
    }
    if (stopping) {
      const std::string path = hooks.save_checkpoint(done);
      for (LoopObserver* o : observers) o->checkpointed(done, path);
      const std::string why = !signalled             ? "run.stop_after"
                              : my_signal == SIGINT  ? "SIGINT"
                              : my_signal == SIGTERM ? "SIGTERM"
                              : my_signal            ? "signal " + std::to_string(my_signal)
                                                     : "a signal to another rank";
      message("stopped by " + why + " after step " + std::to_string(done) + "; checkpoint " + path +
              " (continue with --resume)");
      result.status = signalled ? TrainResult::Status::interrupted : TrainResult::Status::paused;
      result.steps = done;
      return result;
    }
  }
  result.steps = s.total_steps;
  result.images_per_s = train_seconds > 0 ? double(images_trained) / train_seconds : 0;
  return result;
}

}  // namespace kd
