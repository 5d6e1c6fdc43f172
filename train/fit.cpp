// The fit loop (fit.h).
#include "train/fit.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "autograd/ops.h"
#include "core/distributed.h"
#include "core/math.h"
#include "core/serialize.h"
#include "layers/dropout.h"
#include "layers/norm.h"
#include "optim/clip.h"
#include "train/grad_reducer.h"
#include "train/progress.h"
#include "train/quant_context.h"

namespace lowbit::train {
namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int sig) {
  g_interrupted = true;
  std::signal(sig, SIG_DFL);  // a second Ctrl-C kills at once
}

// Everything that, with the checkpointed tensors, fixes the rest of the run.
struct Position {
  int64_t epoch = 0;  // epoch in progress (0-based)
  int64_t batch = 0;  // next batch of that epoch
  // Running sums of the epoch in progress (so an interrupted epoch reports the same summary).
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  int64_t counted = 0;  // samples whose step gave logits (the accuracy's denominator)
  double seconds = 0;   // training time of the epoch so far
  // Gradient-l1: sums over the epoch's steps where it was active (penalty, weight and activation norms).
  double gl1_sum = 0, gl1_w_sum = 0, gl1_a_sum = 0;
  int64_t gl1_steps = 0;
};

constexpr const char* kFormat = "lowbit-train";

void save_state(const std::string& path, const FitOptions& o, Module& model, optim::Optimizer& opt,
                const QuantContext* quant, const Position& pos,
                const std::map<std::string, Tensor>& rank_buffers = {}) {
  Checkpoint c;
  c.meta["format"] = std::string(kFormat);
  c.meta["config"] = o.config_text;
  c.meta["epoch"] = pos.epoch;
  c.meta["batch"] = pos.batch;
  c.meta["epochs_total"] = o.epochs;
  c.meta["loss_sum"] = pos.loss_sum;
  c.meta["correct"] = pos.correct;
  c.meta["seen"] = pos.seen;
  c.meta["counted"] = pos.counted;
  c.meta["seconds"] = pos.seconds;
  c.meta["grad_l1.sum"] = pos.gl1_sum;
  c.meta["grad_l1.weights_sum"] = pos.gl1_w_sum;
  c.meta["grad_l1.acts_sum"] = pos.gl1_a_sum;
  c.meta["grad_l1.steps"] = pos.gl1_steps;
  c.meta["rng.default.seed"] = static_cast<int64_t>(default_generator().seed());
  c.meta["rng.default.offset"] = static_cast<int64_t>(default_generator().offset());
  for (auto& [name, m] : model.named_modules())
    if (auto* d = dynamic_cast<Dropout*>(m.get())) {
      c.meta["rng." + name + ".seed"] = static_cast<int64_t>(d->generator().seed());
      c.meta["rng." + name + ".offset"] = static_cast<int64_t>(d->generator().offset());
    }
  c.add_tensors("model.", model.state_dict());
  c.add_tensors("optim.", opt.state_dict());
  if (quant) c.add_tensors("quant.", quant->state_dict());
  if (dist::size() > 1) {  // data parallelism: every rank's own buffers (batch-norm statistics), rank 0's in model.
    c.meta["world_size"] = int64_t(dist::size());
    c.add_tensors("", rank_buffers);
  }
  save_checkpoint(path, c);
}

Position restore_state(const std::string& path, Module& model, optim::Optimizer& opt, QuantContext* quant) {
  const Checkpoint c = load_checkpoint(path);
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == kFormat, path, " is not a training checkpoint");
  Position pos;
  pos.epoch = c.get_int("epoch");
  pos.batch = c.get_int("batch");
  pos.loss_sum = c.get_double("loss_sum");
  pos.correct = c.get_int("correct");
  pos.seen = c.get_int("seen");
  pos.counted = c.has("counted") ? c.get_int("counted") : pos.seen;
  pos.seconds = c.get_double("seconds");
  if (c.has("grad_l1.steps")) {  // checkpoints before gradient-l1 have none
    pos.gl1_sum = c.get_double("grad_l1.sum");
    pos.gl1_w_sum = c.get_double("grad_l1.weights_sum");
    pos.gl1_a_sum = c.get_double("grad_l1.acts_sum");
    pos.gl1_steps = c.get_int("grad_l1.steps");
  }
  default_generator().set_state(static_cast<uint64_t>(c.get_int("rng.default.seed")),
                                static_cast<uint64_t>(c.get_int("rng.default.offset")));
  for (auto& [name, m] : model.named_modules())
    if (auto* d = dynamic_cast<Dropout*>(m.get()))
      d->generator().set_state(static_cast<uint64_t>(c.get_int("rng." + name + ".seed")),
                               static_cast<uint64_t>(c.get_int("rng." + name + ".offset")));
  try {
    model.load_state_dict(c.tensors_with_prefix("model."));
    opt.load_state_dict(c.tensors_with_prefix("optim."));
    if (quant) quant->load_state_dict(c.tensors_with_prefix("quant."));
  } catch (const Error& e) {  // name the file: a checkpoint of another run, or of other options
    throw Error(detail::concat(path, ": does not match this run's model, optimizer or quantization (", e.what(),
                               "); resume a run with the options it was started with"));
  }
  // Data parallelism: this rank's own buffers, when the checkpoint was written by as many ranks.
  const int64_t written_by = c.has("world_size") ? c.get_int("world_size") : 1;
  if (dist::size() > 1 && written_by == dist::size() && dist::rank() > 0) {
    const auto own = c.tensors_with_prefix(detail::concat("rank", dist::rank(), ".model."));
    if (!own.empty()) model.load_state_dict(own, /*strict=*/false);
  }
  if (written_by != dist::size() && dist::is_root())
    std::printf(
        "note: the checkpoint was written by %lld rank(s), this run has %d: per-rank batch-norm "
        "statistics start from rank 0's, so the run does not continue bit-identically\n",
        (long long)written_by, dist::size());
  return pos;
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  LOWBIT_CHECK(out.good(), "cannot append to ", path);
  out << line << '\n';
}

// metrics.jsonl keeps the lines of the first `epochs` epochs only (a resumed run rewrites the rest).
void cut_metrics(const std::string& path, int64_t epochs) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::string line, kept;
  bool cut = false;
  while (std::getline(in, line)) {
    const std::string key = "{\"epoch\": ";
    const bool ours = line.rfind(key, 0) == 0 && std::atoll(line.c_str() + key.size()) <= epochs;
    if (ours)
      kept += line + "\n";
    else
      cut = true;
  }
  if (cut) write_file_atomic(path, kept);
}

// The first parameter (model order) whose gradient, or whose value, is not finite; "" if none.
std::string first_nonfinite(Module& model, bool gradients) {
  for (const auto& [name, p] : model.named_parameters()) {
    if (gradients && !p.grad().defined()) continue;
    if (!math::all_finite(gradients ? p.grad().data() : p.data())) return name;
  }
  return "";
}

// Every BatchNorm synchronized (options.sync_batch_norm) while fit runs, unsynchronized after.
struct SyncBatchNormScope {
  Module& model;
  bool on;
  SyncBatchNormScope(Module& m, bool sync) : model(m), on(sync) {
    if (on) set_sync_batch_norm(model, true);
  }
  ~SyncBatchNormScope() {
    if (on) set_sync_batch_norm(model, false);
  }
};

// Runs the step once more without gradients, watching every leaf module's output, and returns the
// first module (in execution order) whose output is not finite, or "" if none is. Only on the way
// out of a stopped run: it updates batch-norm statistics like any forward pass. It runs on the failing
// rank alone, so it calls no collective (batch norm unsynchronized meanwhile).
std::string first_nonfinite_output(Module& model, const data::Batch& b, const StepFn& step) {
  std::string first;
  bool synced = false;
  for (auto& [name, m] : model.named_modules())
    if (auto* bn = dynamic_cast<BatchNormBase*>(m.get())) synced = synced || bn->sync();
  if (synced) set_sync_batch_norm(model, false);
  std::vector<std::pair<Module*, VariableTransform>> saved;
  for (auto& [name, m] : model.named_modules()) {
    if (!m->named_children().empty()) continue;
    Module* mp = m.get();
    VariableTransform prev = mp->output_hook();
    saved.emplace_back(mp, prev);
    mp->set_output_hook([prev, name = name, &first](const Variable& y) {
      Variable out = prev ? prev(y) : y;
      if (first.empty() && !math::all_finite(out.data())) first = name.empty() ? "the model" : name;
      return out;
    });
  }
  try {
    NoGradGuard ng;
    step(model, b);
  } catch (const std::exception&) {
  }
  for (auto& [m, hook] : saved) m->set_output_hook(hook);
  if (synced) set_sync_batch_norm(model, true);
  return first;
}

// ---- data parallelism (docs/distributed.md) ----

// Every optimizer group's parameters once, in group order: the same list on every rank.
std::vector<Variable> reduced_parameters(const optim::Optimizer& opt) {
  std::vector<Variable> out;
  for (const Variable& p : opt.parameters()) {
    bool seen = false;
    for (const Variable& q : out) seen = seen || q.same(p);
    if (!seen) out.push_back(p);
  }
  return out;
}

// Floating-point buffers of the model (batch-norm running statistics), by name: each rank's own in
// data parallelism (statistics of its share of each batch).
std::vector<std::pair<std::string, Tensor>> float_buffers(Module& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : model.named_buffers())
    if (t.dtype() == DType::f32 || t.dtype() == DType::f64) out.emplace_back(name, t);
  return out;
}

// Every rank's float buffers, on every rank: [rank][buffer] as doubles (exact for float32).
std::vector<std::vector<double>> gather_buffers(Module& model) {
  const auto bufs = float_buffers(model);
  int64_t total = 0;
  for (auto& [_, t] : bufs) total += t.numel();
  const int world = dist::size(), me = dist::rank();
  std::vector<double> all(size_t(total * world), 0.0);
  int64_t at = total * me;
  for (auto& [_, t] : bufs) {
    const Tensor c = t.to(DType::f64).contiguous();
    std::memcpy(all.data() + at, c.data_ptr(), size_t(c.numel()) * sizeof(double));
    at += c.numel();
  }
  dist::allreduce_sum(all.data(), int64_t(all.size()));  // each slot has one non-zero contributor: exact
  std::vector<std::vector<double>> out(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) out[size_t(r)].assign(all.begin() + total * r, all.begin() + total * (r + 1));
  return out;
}

// The checkpoint entries "rank<r>.model.<buffer>" of ranks 1.. (rank 0's are the model's own).
std::map<std::string, Tensor> rank_buffer_tensors(Module& model) {
  std::map<std::string, Tensor> out;
  if (dist::size() == 1) return out;
  const auto bufs = float_buffers(model);
  const auto all = gather_buffers(model);
  for (int r = 1; r < dist::size(); ++r) {
    size_t at = 0;
    for (auto& [name, t] : bufs) {
      Tensor v = Tensor::empty(t.shape(), DType::f64);
      std::memcpy(v.data_ptr(), all[size_t(r)].data() + at, size_t(t.numel()) * sizeof(double));
      at += size_t(t.numel());
      out[detail::concat("rank", r, ".model.", name)] = v.to(t.dtype());
    }
  }
  return out;
}

// Every rank's float buffers replaced by the mean over the ranks, x0 + sum_r (x_r - x0) / P in a fixed
// order (the same bits everywhere; exactly x0 when the ranks agree): the evaluation and the checkpoint
// then see one model, and the ranks go on from the same statistics.
void average_buffers(Module& model) {
  if (dist::size() == 1) return;
  const auto bufs = float_buffers(model);
  const auto all = gather_buffers(model);
  const double P = double(dist::size());
  size_t at = 0;
  for (auto& [name, t] : bufs) {
    const int64_t n = t.numel();
    Tensor v = Tensor::empty(t.shape(), DType::f64);
    double* d = v.data<double>();
    for (int64_t k = 0; k < n; ++k) {
      const double x0 = all[0][at + size_t(k)];
      double acc = 0;
      for (size_t r = 1; r < all.size(); ++r) acc += (all[r][at + size_t(k)] - x0) / P;
      d[k] = x0 + acc;
    }
    at += size_t(n);
    Tensor target = t;  // shares storage with the module
    target.copy_(v.to(t.dtype()));
  }
}

// Rank 0's parameters and buffers to every rank (the run starts from one model).
void broadcast_model(Module& model) {
  if (dist::size() == 1) return;
  for (auto& [name, t] : model.state_dict()) {
    Tensor target = t;
    if (target.is_dense()) {
      dist::broadcast(target.data_ptr(), target.numel() * int64_t(dtype_size(target.dtype())));
    } else {
      Tensor c = target.contiguous();
      dist::broadcast(c.data_ptr(), c.numel() * int64_t(dtype_size(c.dtype())));
      target.copy_(c);
    }
  }
}

// Fails when the ranks' parameters are not bit-identical (FNV-1a of every parameter's bytes).
void check_ranks_agree(Module& model, const std::string& where) {
  if (dist::size() == 1) return;
  uint64_t h = 1469598103934665603ull;
  for (auto& [name, p] : model.named_parameters()) {
    const Tensor c = p.data().contiguous();
    const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
    for (size_t k = 0, n = size_t(c.numel()) * dtype_size(c.dtype()); k < n; ++k) h = (h ^ bytes[k]) * 1099511628211ull;
  }
  uint64_t root = h;
  dist::broadcast(&root, sizeof root);
  double differ = root != h ? 1 : 0;
  dist::allreduce_sum(&differ, 1);
  LOWBIT_CHECK(differ == 0, "data parallelism: the parameters of ", int64_t(differ), " rank(s) differ from rank 0's ",
               where, " (the ranks must run the same build, model and options)");
}

// Rank r > 0 draws its own dropout masks and DoReFa gradient noise (--gbits): each generator's seed
// mixed with the rank (split_stream, offsets kept), after the start or a resume gave every rank rank
// 0's generators. Otherwise sample i of every rank's share would get the same mask and noise.
void decorrelate_generators(Module& model, QuantContext* quant) {
  if (dist::rank() == 0) return;
  for (auto& [name, m] : model.named_modules())
    if (auto* d = dynamic_cast<Dropout*>(m.get())) split_stream(d->generator(), uint64_t(dist::rank()));
  if (quant && quant->grad_noise_generator()) split_stream(*quant->grad_noise_generator(), uint64_t(dist::rank()));
}

// Sets the loaders' shards for the run and restores them when fit returns.
struct ShardScope {
  std::vector<data::DataLoader*> loaders;
  ShardScope(std::initializer_list<data::DataLoader*> ls) {
    if (dist::size() == 1) return;
    for (auto* l : ls)
      if (l) l->set_shard(dist::rank(), dist::size()), loaders.push_back(l);
  }
  ~ShardScope() {
    for (auto* l : loaders) l->set_shard(0, 1);
  }
};

StepOutput cross_entropy_step(Module& model, const data::Batch& b) {
  Variable logits = model(Variable(b.images));
  return {cross_entropy(logits, b.labels), logits.data()};
}

// Restores SIGINT's handler when fit returns, however it returns.
// Data parallelism: also SIGUSR1, which mpirun forwards to every rank (it answers SIGINT by killing
// them): `kill -USR1 <mpirun's pid>` saves and stops every rank at the same step.
struct SigintScope {
  bool active, usr1;
  SigintScope(bool on, bool also_usr1) : active(on), usr1(on && also_usr1) {
    if (active) g_interrupted = false, std::signal(SIGINT, on_sigint);
    if (usr1) std::signal(SIGUSR1, on_sigint);
  }
  ~SigintScope() {
    if (active) std::signal(SIGINT, SIG_DFL);
    if (usr1) std::signal(SIGUSR1, SIG_DFL);
  }
};

}  // namespace

std::string checkpoint_config(const std::string& path) {
  const Checkpoint c = load_checkpoint(path);
  LOWBIT_CHECK(c.has("format") && c.get_string("format") == kFormat, path, " is not a training checkpoint");
  return c.has("config") ? c.get_string("config") : "";
}

FitResult fit(Module& model, optim::Optimizer& opt, data::DataLoader& train, data::DataLoader* test,
              const FitOptions& options, QuantContext* quant) {
  // Data parallelism (docs/distributed.md): P ranks of one MPI job each run this loop on their share of
  // every batch; rank 0 alone prints and writes files.
  const int world = dist::size();
  const bool writer = dist::is_root();
  FitOptions o = options;
  if (!writer) o.verbose = 0;
  LOWBIT_CHECK(o.epochs >= 1, "fit: epochs must be >= 1, got ", o.epochs);
  const auto schedule = o.schedule ? o.schedule : optim::constant();
  const StepFn step = o.step ? o.step : StepFn(cross_entropy_step);
  LOWBIT_CHECK(!o.step_sets_gradients || (o.step && o.clip_grad_norm <= 0 && !(quant && quant->has_grad_l1())),
               "fit: step_sets_gradients needs a step and combines with neither gradient clipping nor the "
               "gradient-l1 penalty");
  if (world > 1) {
    LOWBIT_CHECK(!(quant && quant->has_grad_l1() && quant->spec().grad_l1_balance),
                 "--grad-l1-balance is not available with more than one rank (it measures one rank's batch); "
                 "set --lambda-a instead");
    LOWBIT_CHECK(!(quant && quant->has_grad_l1() && quant->spec().grad_l1_mode == "fd"),
                 "the finite-difference gradient-l1 mode (--grad-l1-mode fd) is not available with more than one "
                 "rank (its perturbed pass would need the whole batch's gradient sign); the exact mode is");
    const int64_t B = train.options().batch_size, N = train.dataset().size();
    const int64_t tail = train.options().drop_last ? 0 : N % B;
    LOWBIT_CHECK(B >= world && (tail == 0 || tail >= world),
                 "data parallelism: every batch must have at least one image per rank; batch ", B, " (last batch ",
                 tail == 0 ? B : tail, ") over ", world, " ranks");
  }
  const std::string ckpt_path = o.out.empty() ? "" : o.out + "/checkpoint.ckpt";
  const std::string metrics_path = o.out.empty() ? "" : o.out + "/metrics.jsonl";
  if (!o.out.empty() && writer) std::filesystem::create_directories(o.out);
  // Checkpoints: every rank takes part (the ranks' own buffers are gathered), rank 0 writes.
  auto save = [&](const std::string& path, const Position& at) {
    const auto rank_buffers = rank_buffer_tensors(model);
    if (writer) save_state(path, o, model, opt, quant, at, rank_buffers);
  };

  FitResult result;
  Position pos;
  // One model on every rank: rank 0's parameters and buffers (a resumed run then takes its rank's own
  // buffers from the checkpoint).
  broadcast_model(model);
  if (!o.resume.empty()) {
    pos = restore_state(o.resume, model, opt, quant);
    if (!metrics_path.empty() && writer) cut_metrics(metrics_path, pos.epoch);
    if (o.verbose >= 1)
      std::printf("resumed from %s at epoch %lld, batch %lld\n", o.resume.c_str(), (long long)pos.epoch + 1,
                  (long long)pos.batch);
  } else if (!o.out.empty() && writer) {
    // A fresh run owns its folder's records: metrics of an earlier run there are replaced.
    if (!o.config_text.empty()) write_file_atomic(o.out + "/config.txt", o.config_text);
    std::filesystem::remove(metrics_path);
  }

  decorrelate_generators(model, quant);
  LOWBIT_CHECK(!o.sync_batch_norm || !o.step_sets_gradients,
               "fit: synchronized batch norm does not combine with step_sets_gradients (DCQ's sections)");
  SyncBatchNormScope sync_bn(model, o.sync_batch_norm);
  const bool default_eval = !o.evaluate && test;
  ShardScope shards{&train, default_eval ? test : nullptr};
  // The gradients' all-reduce (train/grad_reducer.h): buckets start during backward.
  std::unique_ptr<GradientReducer> reducer;
  if (world > 1) reducer = std::make_unique<GradientReducer>(reduced_parameters(opt), o.bucket_bytes);

  SigintScope sigint(o.catch_sigint, world > 1);
  auto last_save = std::chrono::steady_clock::now();
  const int64_t nb = train.num_batches();
  LOWBIT_CHECK(nb > 0, "fit: the training loader has no batch");
  auto evaluate_now = [&]() -> EvalResult {
    if (o.evaluate) return o.evaluate(model);
    if (!test) return EvalResult{};
    EvalResult r = evaluate(model, *test);
    if (world > 1) {  // each rank evaluated its shard of the test set: the sums over the ranks
      double v[3] = {r.loss * double(r.images), std::round(r.accuracy * double(r.images)), double(r.images)};
      dist::allreduce_sum(v, 3);
      r.images = int64_t(v[2]);
      r.loss = v[2] > 0 ? v[0] / v[2] : 0;
      r.accuracy = v[2] > 0 ? v[1] / v[2] : 0;
    }
    return r;
  };

  for (; pos.epoch < o.epochs; ++pos.epoch, pos = Position{.epoch = pos.epoch}) {
    model.train();
    Progress bar(detail::concat("epoch ", pos.epoch + 1, "/", o.epochs), nb, o.verbose >= 2 ? o.progress_every : 0);
    const double seconds_before = pos.seconds;
    double wait_seconds = 0, allreduce_seconds = 0;  // data parallelism (EpochRecord)
    int64_t buckets_in_backward = 0, buckets_total = 0;
    train.begin_epoch(pos.epoch, pos.batch);
    data::Batch b;
    while (train.next(b)) {
      const double t = double(pos.epoch) + double(pos.batch) / double(nb);
      optim::apply_schedule(opt, *schedule, t);
      opt.set_position(t, double(o.epochs));
      if (quant) quant->begin_step(t, double(o.epochs));
      // Gradient-l1 (spec §7; quant/grad_l1.h): exact, the step's forward pass with the activations
      // captured and the penalty of its loss by double backward; fd, the step run twice by fd_step, which
      // sets the gradients itself (the first run's output is the step's).
      const quant::GradL1Regularizer* gl1 = quant ? quant->grad_l1() : nullptr;
      // --grad-l1-balance: lambda_a from the first regularized batch, before its step (quant_context.h).
      if (gl1 && quant->grad_l1_balance_pending()) {
        const double lambda_a = quant->balance_grad_l1([&] { return step(model, b).loss; });
        if (o.verbose >= 1 && lambda_a >= 0)
          std::printf(
              "gradient-l1: lambda_a = %.6g (balanced: lambda_a * activation sums = lambda * weight sums "
              "on this batch)\n",
              lambda_a);
      }
      const bool gl1_fd = gl1 && gl1->options().mode == quant::GradL1Mode::fd;
      // Data parallelism: this rank's share of the global batch, n_r / N.
      const double share = world > 1 ? double(b.labels.numel()) / double(b.global_size) : 1.0;
      // Gradient-l1 on ranks: the share goes into the graph (the loss and the optimizer's terms are
      // weighted there, the penalty, the same on every rank, divided by the ranks), and the gradient
      // all-reduce adds the ranks' gradients unweighted. Otherwise the all-reduce weights by the share.
      const bool gl1_ranks = gl1 && world > 1;
      LOWBIT_CHECK(world == 1 || b.global_size > 0, "fit: a sharded batch must know its global size");
      StepOutput out;
      quant::GradL1Penalty penalty;
      if (gl1_fd) {
        opt.zero_grad();
        int runs = 0;
        penalty = gl1->fd_step(model, [&] {
          StepOutput o = step(model, b);
          if (runs++ == 0) out = o;
          return o.loss;
        });
      } else if (o.step_sets_gradients) {
        opt.zero_grad();
        out = step(model, b);
      } else {
        std::optional<quant::ActivationCapture> capture;
        if (gl1) capture.emplace(gl1->capture());
        out = step(model, b);
        LOWBIT_CHECK(out.loss.defined() && out.loss.numel() == 1, "fit: the step must return a scalar loss");
        // Data parallelism: the penalty of the whole batch's gradient (its norms all-reduced inside the
        // graph, quant/grad_l1.h), from this rank's share-weighted loss; every rank computes it (it holds
        // collectives), finite or not.
        if (gl1 && world > 1)
          penalty = gl1->penalty(mul(out.loss, share), capture->activations(), /*across_ranks=*/true);
        else if (gl1 && std::isfinite(out.loss.item()))
          penalty = gl1->penalty(out.loss, capture->activations());
      }
      LOWBIT_CHECK(out.loss.defined() && out.loss.numel() == 1, "fit: the step must return a scalar loss");
      const double loss_value = out.loss.item();
      Variable total = out.loss;
      if (penalty.value.defined()) total = total + penalty.value;
      Variable reg = opt.regularization_loss();
      if (reg.defined()) total = total + reg;
      // Non-finite values: the loss and the regularizers' term, then the gradients, before the step.
      std::string fault;
      auto value_text = [](double v) { return std::isnan(v) ? std::string("nan") : detail::concat(v); };
      if (!std::isfinite(loss_value))
        fault = "the loss is " + value_text(loss_value);
      else if (penalty.value.defined() && !std::isfinite(penalty.value.item()))
        fault = "the gradient-l1 penalty is " + value_text(penalty.value.item());
      else if (!std::isfinite(total.item()))
        fault = "the regularization term is " + value_text(total.item() - loss_value);
      // A backward pass holding collectives (synchronized batch norm, gradient-l1 across ranks) runs on
      // every rank or on none: the ranks agree on a fault first.
      if (world > 1 && (o.sync_batch_norm || gl1_ranks)) {
        double any_fault = fault.empty() ? 0 : 1;
        dist::allreduce_sum(&any_fault, 1);
        if (any_fault > 0 && fault.empty()) fault = "a non-finite loss or gradient on another rank";
      }
      if (fault.empty()) {
        if (gl1_fd || o.step_sets_gradients) {  // the gradients are set; the optimizer's regularizers add theirs
          if (reg.defined()) reg.backward();
        } else {
          opt.zero_grad();
          if (reducer) reducer->start(gl1_ranks ? 1.0 : share);
          if (gl1_ranks) {
            Variable weighted = add(mul(out.loss, share), mul(penalty.value, 1.0 / double(world)));
            if (reg.defined()) weighted = add(weighted, mul(reg, share));
            weighted.backward();
          } else {
            total.backward();
          }
        }
        const std::string p = first_nonfinite(model, /*gradients=*/true);
        if (!p.empty()) fault = "the gradient of " + p + " is not finite";
      }
      // The batch's sums (this rank's share; all ranks' after the all-reduce below).
      const int64_t n_local = b.labels.numel();
      double step_loss_sum = loss_value * double(n_local);
      int64_t step_correct = out.logits.defined() ? count_correct(out.logits, b.labels) : 0;
      int64_t step_counted = out.logits.defined() ? n_local : 0, step_seen = n_local;
      bool interrupted = g_interrupted;
      std::optional<bool> agreed_by_time;  // data parallelism: rank 0's clock decides for every rank
      if (world > 1) {
        // The gradients first (every rank, every step, whatever happened: the ranks must issue the same
        // collectives), weighted by the rank's share of the global batch so the sum is its mean gradient.
        const auto t0 = std::chrono::steady_clock::now();
        reducer->finish(gl1_ranks ? 1.0 : share);
        const auto t1 = std::chrono::steady_clock::now();
        allreduce_seconds += std::chrono::duration<double>(t1 - t0).count();
        buckets_in_backward += reducer->started_during_backward(), buckets_total += reducer->num_buckets();
        // Then one small all-reduce settles what the ranks must agree on: a fault on any rank, Ctrl-C, a
        // checkpoint by time and the batch's sums.
        std::vector<double> ctrl(7, 0.0);
        ctrl[0] = fault.empty() ? 0 : 1;
        ctrl[1] = g_interrupted ? 1 : 0;
        ctrl[2] = writer && o.checkpoint_every_seconds > 0 &&
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - last_save).count() >=
                              o.checkpoint_every_seconds
                      ? 1
                      : 0;
        ctrl[3] = step_loss_sum, ctrl[4] = double(step_correct), ctrl[5] = double(step_counted);
        ctrl[6] = double(step_seen);
        dist::allreduce_sum(ctrl.data(), int64_t(ctrl.size()));
        wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
        if (ctrl[0] > 0 && fault.empty()) fault = "a non-finite loss or gradient on another rank";
        interrupted = ctrl[1] > 0;
        agreed_by_time = ctrl[2] > 0;
        step_loss_sum = ctrl[3], step_correct = int64_t(ctrl[4]), step_counted = int64_t(ctrl[5]);
        step_seen = int64_t(ctrl[6]);
      }
      const std::string where =
          detail::concat("epoch ", pos.epoch + 1, ", batch ", pos.batch + 1, " (step ", opt.step_count() + 1, ")");
      const std::string kept = ckpt_path.empty() ? std::string("no run folder")
                               : result.checkpoint.empty() && o.resume.empty()
                                   ? "no checkpoint was written yet"
                                   : "the last checkpoint (" + ckpt_path + ") is kept as it was";
      if (!fault.empty() && o.on_nonfinite == NonFinitePolicy::skip_step &&
          result.skipped_steps_in_a_row < o.max_skipped_steps) {
        opt.zero_grad();
        ++result.skipped_steps, ++result.skipped_steps_in_a_row;
        if (o.verbose >= 1) std::printf("skipped %s: %s\n", where.c_str(), fault.c_str());
        ++pos.batch;
        pos.seconds = seconds_before + bar.seconds();
        ++result.batches;
        continue;
      }
      if (!fault.empty()) {
        if (std::isnan(loss_value) || std::isinf(loss_value)) {
          const std::string module = first_nonfinite_output(model, b, step);
          const std::string weight = first_nonfinite(model, /*gradients=*/false);
          if (!module.empty()) fault += " (the first output that is not finite: " + module + ")";
          if (!weight.empty()) fault += " (the weight " + weight + " is not finite)";
        }
        throw Error(
            detail::concat("training stopped at ", where, ": ", fault,
                           o.on_nonfinite == NonFinitePolicy::skip_step
                               ? detail::concat(" after ", result.skipped_steps_in_a_row, " skipped steps in a row")
                               : std::string(),
                           "; ", kept,
                           ". Lower the learning rate, clip the gradients (--clip-grad), or skip such steps "
                           "(--on-nonfinite skip-step)"));
      }
      result.skipped_steps_in_a_row = 0;
      if (quant) quant->after_backward();
      if (o.clip_grad_norm > 0) optim::clip_grad_norm(model.parameters(), o.clip_grad_norm);
      opt.step();
      if (quant) quant->after_step();
      const std::string bad_weight = first_nonfinite(model, /*gradients=*/false);
      LOWBIT_CHECK(bad_weight.empty(), "training stopped at ", where, ": the step made the weight ", bad_weight,
                   " not finite; ", kept, ". Lower the learning rate or clip the gradients (--clip-grad)");

      pos.loss_sum += step_loss_sum;
      pos.correct += step_correct, pos.counted += step_counted;
      pos.seen += step_seen;
      if (penalty.value.defined()) {
        pos.gl1_sum += penalty.value.item();
        pos.gl1_w_sum += penalty.weight_l1;
        pos.gl1_a_sum += penalty.act_l1;
        ++pos.gl1_steps;
      }
      ++pos.batch;
      pos.seconds = seconds_before + bar.seconds();
      if (o.verbose >= 2)
        bar.update(pos.batch, pos.loss_sum / double(pos.seen),
                   pos.counted ? double(pos.correct) / double(pos.counted) : 0.0, pos.seen);
      ++result.batches;
      if (world == 1) interrupted = g_interrupted;
      if (interrupted || result.batches == o.stop_after_batches) {
        bar.finish();
        result.interrupted = interrupted;
        if (!ckpt_path.empty()) {
          save(ckpt_path, pos);
          result.checkpoint = ckpt_path;
          if (o.verbose >= 1)
            std::printf("%s: checkpoint saved to %s at epoch %lld batch %lld; continue with --resume\n",
                        interrupted ? "interrupted" : "stopped", ckpt_path.c_str(), (long long)pos.epoch + 1,
                        (long long)pos.batch);
        }
        return result;
      }
      // Within the epoch: every N batches, and every so many seconds of training.
      const bool by_count = o.checkpoint_every_batches > 0 && pos.batch % o.checkpoint_every_batches == 0;
      const bool by_time =
          agreed_by_time ? *agreed_by_time
                         : o.checkpoint_every_seconds > 0 &&
                               std::chrono::duration<double>(std::chrono::steady_clock::now() - last_save).count() >=
                                   o.checkpoint_every_seconds;
      if (!ckpt_path.empty() && pos.batch < nb && (by_count || by_time)) {
        save(ckpt_path, pos);
        result.checkpoint = ckpt_path;
        last_save = std::chrono::steady_clock::now();
      }
    }
    bar.finish();
    // Data parallelism: the ranks' batch-norm statistics averaged (one model to evaluate and to save),
    // and a check that the all-reduce kept every rank's parameters identical.
    average_buffers(model);
    check_ranks_agree(model, detail::concat("after epoch ", pos.epoch + 1));
    EpochRecord r;
    r.epoch = pos.epoch + 1;
    r.epochs = o.epochs;
    r.test = evaluate_now();
    r.train_loss = pos.seen ? pos.loss_sum / double(pos.seen) : 0;
    r.train_acc = pos.counted ? double(pos.correct) / double(pos.counted) : std::nan("");
    r.lr = opt.param_groups()[0].lr;
    r.seconds = pos.seconds;
    r.images_per_sec = pos.seconds > 0 ? double(pos.seen) / pos.seconds : 0;
    r.wait_seconds = wait_seconds, r.allreduce_seconds = allreduce_seconds;
    r.buckets = buckets_total, r.buckets_during_backward = buckets_in_backward;
    const double gl1_steps = pos.gl1_steps ? double(pos.gl1_steps) : std::nan("");
    r.grad_l1 = pos.gl1_sum / gl1_steps;
    r.grad_l1_weights = pos.gl1_w_sum / gl1_steps;
    r.grad_l1_acts = pos.gl1_a_sum / gl1_steps;
    result.last_eval = r.test;
    result.history.push_back(r);
    if (o.verbose >= 1) {
      std::printf("epoch %lld/%lld  train loss %.4f acc %.2f%%", (long long)r.epoch, (long long)r.epochs, r.train_loss,
                  100 * r.train_acc);
      if (r.test.images) std::printf("  test loss %.4f acc %.2f%%", r.test.loss, 100 * r.test.accuracy);
      if (pos.gl1_steps) std::printf("  grad-l1 %.4g", r.grad_l1);
      std::printf("  lr %.4g  %.1fs (%.0f img/s)", r.lr, r.seconds, r.images_per_sec);
      if (world > 1)
        std::printf("  %d ranks: wait %.2fs, all-reduce %.2fs (%lld of %lld buckets started during backward)", world,
                    r.wait_seconds, r.allreduce_seconds, (long long)r.buckets_during_backward, (long long)r.buckets);
      std::printf("\n");
    }
    if (!metrics_path.empty() && writer) {
      std::ostringstream js;
      js << "{\"epoch\": " << r.epoch << ", \"train_loss\": " << json_number(r.train_loss)
         << ", \"train_acc\": " << json_number(r.train_acc) << ", \"test_loss\": " << json_number(r.test.loss)
         << ", \"test_acc\": " << json_number(r.test.accuracy) << ", \"lr\": " << json_number(r.lr)
         << ", \"seconds\": " << json_number(r.seconds) << ", \"images_per_sec\": " << json_number(r.images_per_sec);
      if (world > 1)
        js << ", \"ranks\": " << world << ", \"wait_seconds\": " << json_number(r.wait_seconds)
           << ", \"allreduce_seconds\": " << json_number(r.allreduce_seconds) << ", \"buckets\": " << r.buckets
           << ", \"buckets_during_backward\": " << r.buckets_during_backward;
      if (pos.gl1_steps)
        js << ", \"grad_l1\": " << json_number(r.grad_l1) << ", \"grad_l1_weights\": " << json_number(r.grad_l1_weights)
           << ", \"grad_l1_acts\": " << json_number(r.grad_l1_acts);
      if (quant) js << quant->epoch_json();
      js << "}";
      append_line(metrics_path, js.str());
    }
    if (quant) {
      quant->end_epoch(r.epoch, r.train_loss, r.train_acc, r.test.loss, r.test.accuracy);
      if (o.verbose >= 1)
        std::printf("%s%s", format_layer_rows(quant->layer_rows(), quant->spec().reg == "waveq").c_str(),
                    quant->epoch_text().c_str());
    }
    if (o.on_epoch) o.on_epoch(r);

    if (!ckpt_path.empty()) {
      Position next;
      next.epoch = pos.epoch + 1;
      save(ckpt_path, next);
      result.checkpoint = ckpt_path;
      last_save = std::chrono::steady_clock::now();
      if (quant && quant->best_within_budget()) {  // memory budgets: the best epoch that met them
        save(o.out + "/best_within_budget.ckpt", next);
        if (o.verbose >= 1)
          std::printf("best within the memory budget so far: epoch %lld (%s/best_within_budget.ckpt)\n",
                      (long long)r.epoch, o.out.c_str());
      }
    }
  }
  if (result.history.empty()) result.last_eval = evaluate_now();  // resumed a finished run
  result.finished = true;
  return result;
}

}  // namespace lowbit::train
