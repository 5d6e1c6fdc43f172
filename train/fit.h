// The fit loop: epochs of mini-batch steps over a DataLoader with an optimizer, a learning-rate
// schedule, optional quantization (a QuantContext), per-epoch evaluation and metrics, atomic
// checkpoints and exact resume, and live progress.
//
// One step (t = epoch + batch / batches, fractional epochs):
//   lr of every group = initial lr * schedule(t)
//   optimizer.set_position(t, epochs)          every regularizer's lambda schedule (WaveQ, SinReQ)
//   quant->begin_step(t, epochs)                the quantizer bits that follow WaveQ's learned beta
//   loss = step(model, batch) + optimizer.regularization_loss()
//          (+ the gradient-l1 penalty when quant->grad_l1() is active, spec §7: exact mode, the step runs
//           with the activations captured and quant/grad_l1.h's penalty of its loss is added; fd mode,
//           GradL1Regularizer::fd_step runs the step twice and sets the gradients itself)
//   backward, optional gradient clipping, optimizer.step(), quant->after_step() (beta clamp, U3 clip)
// A non-finite loss stops the run with an error naming the epoch and batch.
//
// Non-finite values: a non-finite loss (or regularization term) or gradient is found before the
// optimizer step, a non-finite weight after it. With NonFinitePolicy::stop (default) the run stops
// with an error naming the epoch, batch and step, the parameter (first in model order) or, for a
// loss, the first module whose output was not finite (a diagnostic forward pass); nothing is
// written, so the last checkpoint stays as it was. With skip_step a non-finite loss or gradient
// skips the step (counted, reported) and training goes on; max_skipped_steps in a row stop it; a
// non-finite weight always stops.
//
// After each epoch: evaluation (options.evaluate, or train::evaluate on the test loader), a line of
// metrics.jsonl in the run folder (with "grad_l1", "grad_l1_weights", "grad_l1_acts" in epochs where
// the gradient-l1 penalty was active), the quantization table (verbose >= 1), on_epoch, and a checkpoint.
// Within an epoch a checkpoint is also written every checkpoint_every_batches batches and whenever
// checkpoint_every_seconds of training time have passed since the last one (default 10 minutes, so
// an interrupted long epoch loses little).
//
// Run folder (options.out, "" for none): config.txt (options.config_text, a new run), metrics.jsonl
// (one JSON object per epoch), checkpoint.ckpt: model, optimizer, quantization state, position
// (epoch, batch, the epoch's running sums), the default generator's and every Dropout's RNG state,
// written atomically after every epoch, at stop_after_batches and on Ctrl-C (catch_sigint).
// Resume (options.resume = a checkpoint) continues bit-identically: the data order and augmentation
// are functions of (seed, epoch, index), the schedules functions of t, and all other state is in the
// checkpoint; metrics.jsonl is cut back to the epochs the checkpoint has finished (a kill between
// its line and the checkpoint would otherwise repeat one). The model, optimizer and context must be
// built as for the original run.
//
// Data parallelism (docs/distributed.md; core/distributed.h): run under `mpirun -np P`, every rank runs
// fit on the same model, optimizer and loaders. fit shards the training loader (and the test loader of
// the default evaluation) so that rank r takes its contiguous part of every global batch, broadcasts
// rank 0's model at the start, and all-reduces the gradients of every optimizer group's parameters
// (weights, WaveQ's beta, learned quantizer steps, ...) in buckets of bucket_bytes, each started during
// backward as soon as its gradients are final (train/grad_reducer.h) and weighted by the rank's share of
// the batch, so the update is the global batch's mean gradient. The
// loss, accuracy and evaluation sums are reduced over the ranks; batch-norm statistics are per rank,
// averaged at every epoch's end (and each rank's own are kept in the checkpoint, so --resume with the
// same P continues exactly), or synchronized over the ranks (options.sync_batch_norm). Rank 0 alone prints and writes
// the run folder. Gradient-l1 (exact mode) takes the whole batch's gradient across the ranks
// (quant/grad_l1.h); its fd mode refuses ranks.
//
// Custom losses (a section of a net trained against a teacher, a distillation loss): options.step
// returns the batch's loss and, optionally, logits for the accuracy column; options.evaluate
// replaces the per-epoch evaluation (or set no test loader). A step that runs its own backward
// passes (several independent losses in parallel) sets options.step_sets_gradients.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/module.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "train/evaluate.h"

namespace lowbit::train {

class QuantContext;

struct StepOutput {
  Variable loss;  // scalar
  Tensor logits;  // [B, classes] for the accuracy column; undefined: no accuracy
};
using StepFn = std::function<StepOutput(Module& model, const data::Batch& batch)>;

struct EpochRecord {
  int64_t epoch = 0;  // 1-based
  int64_t epochs = 0;
  // train_loss: the mean of the step's loss, without regularization terms; train_acc NaN when the step
  // gives no logits.
  double train_loss = 0, train_acc = 0;
  // Gradient-l1 (--reg grad-l1), means over the epoch's steps where it was active (NaN: none was):
  // the penalty added to the loss, and its two unweighted norms sum_l ||dL/dW_l||_1, sum_l ||dL/da_l||_1.
  double grad_l1 = 0, grad_l1_weights = 0, grad_l1_acts = 0;
  EvalResult test;  // images == 0: not evaluated
  double lr = 0, seconds = 0, images_per_sec = 0;
  // Data parallelism (this call's steps of the epoch, rank 0's clock): time in the per-step agreement and
  // in finishing the gradients' all-reduce after backward (it includes waiting for the slowest rank).
  double wait_seconds = 0, allreduce_seconds = 0;
  int64_t buckets = 0, buckets_during_backward = 0;  // all-reduces this epoch; of them, started in backward
};

enum class NonFinitePolicy { stop, skip_step };

struct FitOptions {
  int64_t epochs = 1;
  std::shared_ptr<optim::LRSchedule> schedule{};  // null: constant
  double clip_grad_norm = 0;                      // > 0: clip the 2-norm of the model's gradients
  std::string out{};                              // run folder; "": no files
  std::string resume{};                           // checkpoint to continue from
  std::string config_text{};                      // kept in the checkpoint ("config") and config.txt
  int64_t stop_after_batches = -1;                // > 0: save and return after this many batches
  int64_t checkpoint_every_batches = 0;           // > 0: also a checkpoint every N batches of an epoch
  double checkpoint_every_seconds = 600;          // > 0: also one after this much training time
  NonFinitePolicy on_nonfinite = NonFinitePolicy::stop;
  int64_t max_skipped_steps = 100;  // skip_step: this many skipped in a row stop the run
  bool catch_sigint = false;        // Ctrl-C: save, return interrupted (a second one kills)
  // Data parallelism: gradients are all-reduced in buckets of about this many bytes.
  int64_t bucket_bytes = int64_t{4} << 20;
  // Synchronized batch norm: in training every BatchNorm normalises with the global batch's statistics
  // (autograd/ops_nn.h sync_batch_norm: one all-reduce each way per layer); also in one process, where
  // it equals the default. Not with step_sets_gradients (DCQ's sections run on worker threads).
  bool sync_batch_norm = false;
  int verbose = 1;              // 0 silent, 1 a line per epoch, 2 also live progress
  int64_t progress_every = 50;  // progress lines when stdout is not a terminal
  StepFn step{};                // default: cross_entropy(model(images), labels)
  // The step computes its parameters' gradients itself (fit zeroes them before the step and adds only
  // the regularizers' term after it): independent parts trained at once, DCQ's sections (train/dcq.h).
  // Its loss is then only reported; --clip-grad and the gradient-l1 penalty do not combine with it.
  bool step_sets_gradients = false;
  std::function<EvalResult(Module&)> evaluate{};  // default: train::evaluate(model, *test)
  std::function<void(const EpochRecord&)> on_epoch{};
};

struct FitResult {
  bool finished = false;      // every epoch done
  bool interrupted = false;   // Ctrl-C
  int64_t batches = 0;        // steps taken by this call
  int64_t skipped_steps = 0;  // steps skipped for non-finite values (skip_step)
  int64_t skipped_steps_in_a_row = 0;
  EvalResult last_eval;  // of the last epoch (evaluated again when a finished run is resumed)
  std::vector<EpochRecord> history;
  std::string checkpoint;  // path of the last checkpoint written ("" if none)
};

// Trains `model` (its parameters must be in `optimizer`'s groups; with a context, build the groups
// with QuantContext::param_groups). `test` may be null.
FitResult fit(Module& model, optim::Optimizer& optimizer, data::DataLoader& train, data::DataLoader* test,
              const FitOptions& options, QuantContext* quant = nullptr);

// The format tag and the run's "config" text of a training checkpoint; throws naming the file when it
// is not one.
std::string checkpoint_config(const std::string& path);

}  // namespace lowbit::train
