// Learning-rate schedules: pure functions of the (possibly fractional) epoch, so resuming a run
// needs only its position. apply_schedule sets group.lr = group.initial_lr * factor(epoch).
//
//   constant()                        1
//   step_lr(s, gamma)                 gamma^floor(e / s)                     (PyTorch StepLR)
//   multistep(milestones, gamma)      gamma^(number of milestones <= e)      (PyTorch MultiStepLR)
//   exponential(gamma)                gamma^e                                (ExponentialLR at integer e)
//   cosine(T, eta_min_ratio)          r + (1 - r) (1 + cos(pi min(e, T) / T)) / 2, r = eta_min_ratio
//                                     (CosineAnnealingLR's closed form; held at r after T)
//   with_warmup(s, w, start)          e < w: start + (1 - start) e / w (PyTorch LinearLR);
//                                     e >= w: s.factor(e - w)                (SequentialLR)
// Passing floor(epoch) reproduces PyTorch's per-epoch stepping; epoch + batch / num_batches gives
// smooth per-batch schedules.
//
// parse_schedule(spec, total_epochs), the command-line form:
//   "constant" | "step:S[:GAMMA]" (gamma 0.1) | "multistep:M1,M2,...[:GAMMA]" (gamma 0.1) |
//   "exp:GAMMA" | "cosine[:ETA_MIN_RATIO]" (T = total epochs, ratio 0) |
//   "warmup:W[:START]+<schedule>" (start 0.1; the inner schedule sees total_epochs - W epochs,
//   so "warmup:5+cosine" reaches its minimum at the last epoch) | "warmup:W[:START]".
// Errors name the string and what is wrong.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace lowbit::optim {

struct LRSchedule {
  virtual ~LRSchedule() = default;
  virtual double factor(double epoch) const = 0;
  virtual std::string str() const = 0;  // the parse_schedule form
};

std::shared_ptr<LRSchedule> constant();
std::shared_ptr<LRSchedule> step_lr(double step_size, double gamma = 0.1);
std::shared_ptr<LRSchedule> multistep(std::vector<double> milestones, double gamma = 0.1);
std::shared_ptr<LRSchedule> exponential(double gamma);
std::shared_ptr<LRSchedule> cosine(double t_max, double eta_min_ratio = 0);
std::shared_ptr<LRSchedule> with_warmup(std::shared_ptr<LRSchedule> schedule, double warmup_epochs,
                                        double start_factor = 0.1);

std::shared_ptr<LRSchedule> parse_schedule(const std::string& spec, int64_t total_epochs);

// group.lr = group.initial_lr * schedule.factor(epoch) for every group.
void apply_schedule(Optimizer& optimizer, const LRSchedule& schedule, double epoch);

}  // namespace lowbit::optim
