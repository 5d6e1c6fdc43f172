// DCQ, divide-and-conquer quantization (spec §4, arXiv 1906.06033): a trained float teacher is cut
// into sections, a quantized copy of each section learns to reproduce the teacher's feature map at
// its end from the teacher's feature map at its start, and the sections, stitched, are the
// quantized network. A training strategy over the fit loop (train/fit.h); it never copies the loop.
//
// Chain. A model runs as a chain of units: its Sequential containers expanded (recursively), so a
// unit is a layer or a block (a ResNet BasicBlock, a MobileNet InvertedResidual) named as in the
// state dict ("conv1", "layer2.0", "features.3"). run_chain(units b..e) = those units in order,
// a BatchNorm followed by a ReLU fused as Sequential does, so the whole chain is the model's
// forward exactly.
//
// Sections. Cuts name units (or containers, standing for their last unit); a section ends after
// each cut. default_cuts: before every unit that halves the feature map (global pooling excepted),
// e.g. ResNet-20 "layer1.2", "layer2.2" (3 sections: stem + stage 1, stage 2, stage 3 + classifier),
// LeNet-5 "relu1", "relu2".
//
// Training, per batch (spec §4.1 steps 2-3), T the teacher (eval mode, no gradients), S the student
// (a copy of the teacher with the run's quantizers attached, train mode):
//   a_0 = x, a_i = T_i(a_{i-1})              the teacher's boundary features, once per batch
//   loss_i = l(S_i(a_{i-1}), a_i)            i < m; l = MSE (default, the official code's), L1,
//                                            Huber (0.5 d^2 for |d| <= delta, else delta (|d| - delta/2)),
//                                            KL(softmax(a_i) || softmax(S_i)) over each sample's features
//   loss_m = cross_entropy(S_m(a_{m-1}), y)  the last section
// Each section's backward runs through S_i only (its input is the teacher's feature, a constant);
// the sections are independent, each with its own parameters and optimizer state (one optimizer,
// state per parameter, no global clipping), and with parallel = true their forward and backward
// passes run as concurrent tasks (core/parallel.h parallel_tasks). Parallel or one after another,
// the weights are the same. The step's loss is the sum of the sections' losses.
//
// Stitching. The student model is the chain of the student sections: evaluating it (the fit
// loop's per-epoch evaluation) gives the stitched network's accuracy, and its checkpoint is a
// training checkpoint that lowbit eval, export and train --init (the optional end-to-end
// fine-tune) read. Sections not trained (train_sections) keep the teacher's weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/module.h"
#include "optim/optimizer.h"
#include "train/evaluate.h"
#include "train/fit.h"

namespace lowbit::train {

struct ChainUnit {
  std::string name;  // full module name
  std::shared_ptr<Module> module;
};

// The model's units in execution order (Sequential containers without an output hook expanded).
std::vector<ChainUnit> module_chain(Module& model);
// Units [begin, end) applied to x in order (BatchNorm + ReLU fused, as Sequential does).
Variable run_chain(const std::vector<ChainUnit>& chain, size_t begin, size_t end, const Variable& x);

struct Section {
  size_t begin = 0, end = 0;  // units [begin, end)
  std::string first, last;    // their names
};

// Sections ending after each cut (a unit's name, or a container's: its last unit), in chain order;
// an unknown name, a cut after the last unit or two cuts at one place are errors listing the units.
std::vector<Section> make_sections(const std::vector<ChainUnit>& chain, const std::vector<std::string>& cuts);
// Cuts before every unit whose output height is at most half its input's (and above 1), found by a
// forward pass of one zero image [1, C, H, W] (image_chw = {C, H, W}) in eval mode.
std::vector<std::string> default_cuts(Module& model, const std::vector<int64_t>& image_chw);

enum class DistillLoss { mse, l1, huber, kl };
DistillLoss parse_distill_loss(const std::string& name);  // mse | l1 | huber | kl
std::string to_string(DistillLoss loss);
// The regression loss between a student's feature map and the teacher's (same shape), a mean over
// elements (KL: a mean over samples of the sum over each sample's features).
Variable distill_loss(const Variable& student, const Tensor& teacher, DistillLoss loss, double huber_delta = 0.4);

struct DcqOptions {
  std::vector<std::string> cuts;  // empty: default_cuts
  DistillLoss loss = DistillLoss::mse;
  double huber_delta = 0.4;
  bool parallel = true;                 // sections as concurrent tasks; false: one after another
  std::vector<int64_t> train_sections;  // 0-based; empty: every section
  // > 0: before each evaluation of the stitched network, its batch norms' running statistics are
  // re-estimated from this many batches of its own features (recalibrate_batch_norm in
  // train/evaluate.h; the sections' batch norms saw the teacher's features in training).
  int64_t recalibrate_bn_batches = 0;
};

class Dcq {
 public:
  // teacher: the float network, frozen here (its parameters stop requiring gradients; eval mode).
  // student: the same architecture (weights copied from the teacher by the caller, quantizers
  // attached). image_chw: the input's {C, H, W} (for default_cuts).
  Dcq(Module& teacher, Module& student, DcqOptions options, const std::vector<int64_t>& image_chw);

  const std::vector<Section>& sections() const { return sections_; }
  const std::vector<ChainUnit>& student_chain() const { return student_; }
  bool trains(size_t section) const;
  // Of `groups` (e.g. QuantContext::param_groups), only the parameters of the trained sections.
  std::vector<optim::ParamGroup> section_groups(std::vector<optim::ParamGroup> groups) const;
  // The section a parameter or buffer (full name) belongs to; -1 for none.
  int64_t section_of(const std::string& name) const;

  // The fit loop's step (FitOptions::step with step_sets_gradients = true): the teacher's features,
  // then every trained section's forward and backward; the loss is their sum, the logits the last
  // section's (when trained). Keeps running sums of each section's loss (mean_losses).
  StepOutput step(Module& student, const data::Batch& batch);
  std::vector<double> mean_losses() const;  // since reset_losses(); NaN for sections not trained
  void reset_losses();
  // Each section's loss on a loader, fed by the teacher (eval mode, no gradients).
  std::vector<double> section_losses(data::DataLoader& loader);

  // FitOptions for training the sections: step, step_sets_gradients; on_epoch also writes
  // OUT/sections.jsonl (per epoch, each section's mean training loss since the epoch began or the
  // run resumed, and its loss on `test` when given) before calling base.on_epoch. With
  // recalibrate_bn_batches > 0 and both loaders, the evaluation on `test` first records the stitched
  // network's accuracy as trained (unrecalibrated()), then recalibrates on `calibration` (e.g.
  // train::calibration_loader: training images without augmentation) and evaluates again; the
  // recalibrated statistics are the ones checkpointed.
  FitOptions fit_options(FitOptions base, data::DataLoader* test, data::DataLoader* calibration = nullptr);
  // The stitched network's last evaluation before recalibration (images = 0 when none ran).
  const EvalResult& unrecalibrated() const { return unrecalibrated_; }

 private:
  // The teacher's features a_0 .. a_needed (no gradients).
  std::vector<Tensor> teacher_features(const Tensor& images, size_t needed);
  Variable section_loss(size_t i, const Variable& out, const std::vector<Tensor>& features, const Tensor& labels) const;

  Module& teacher_;
  std::vector<ChainUnit> teacher_chain_, student_;
  std::vector<Section> sections_;
  DcqOptions options_;
  std::vector<double> loss_sum_;
  std::vector<int64_t> loss_count_;
  EvalResult unrecalibrated_;
};

}  // namespace lowbit::train
