// Optimizer base: parameter groups, per-parameter state, the regularizer hook and state dicts.
//
// Contract
//   - An optimizer updates Variable leaves in place (p.mutable_data()) from their accumulated
//     gradient p.grad(); parameters without a gradient (undefined grad) are skipped and keep their
//     state untouched, as in PyTorch.
//   - Parameters are organised in named groups, each with its own hyper-parameters (lr, weight
//     decay, momentum, betas, ...). Schedules (optim/schedule.h) set group.lr = initial_lr * factor.
//   - Parameters and gradients are float32 or float64 dense tensors (row-major or any dense
//     permutation, e.g. channels-last); a gradient with another layout is copied into the
//     parameter's layout first. Updates are elementwise, so results never depend on thread count.
//   - Regularizer hook: regularization_loss() returns the sum of every group's regularizer terms
//     as a differentiable Variable, added to the task loss before backward(), so the gradient of a
//     regularizer reaches its group's parameters and any trainable parameters of its own (which
//     live in another group with its own lr).
//   - state_dict() holds every per-parameter buffer ("<group>.<param>.<buffer>", param = its
//     name in group.param_names or its index), each group's hyper-parameters ("<group>.lr", ...)
//     and the step counter ("step"), all as tensors; load_state_dict() restores them and throws
//     naming the key on any mismatch (unknown key, missing hyper-parameter, shape or dtype).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"
#include "core/parallel.h"

namespace lowbit::optim {

class Regularizer;

// Members all have defaults so designated initializers may name any subset:
//   ParamGroup{.name = "weights", .params = ws, .lr = 0.1, .momentum = 0.9}
struct ParamGroup {
  std::string name{};  // e.g. "weights", "bitwidths"; empty -> "group<index>"
  std::vector<Variable> params{};
  std::vector<std::string> param_names{};  // parallel to params (may be empty)
  double lr = 0.01;
  double weight_decay = 0;
  double momentum = 0;                            // SGD
  double dampening = 0;                           // SGD
  bool nesterov = false;                          // SGD
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam / AdamW
  bool amsgrad = false;                           // Adam / AdamW
  std::vector<std::shared_ptr<Regularizer>> regularizers{};
  double initial_lr = 0;  // set from lr by the optimizer when 0; schedules scale it

  // Name of parameter i in messages and state dicts: param_names[i] or the index.
  std::string param_label(size_t i) const;
};

// Per-parameter optimizer state: named buffers shaped like the parameter and a step count.
struct ParamState {
  int64_t step = 0;
  std::map<std::string, Tensor> buffers;
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient; increments step_count().
  void step();
  void zero_grad();  // drops every parameter's gradient

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  ParamGroup& group(const std::string& name);  // throws naming the known groups
  std::vector<Variable> parameters() const;    // every group's params, in group order (e.g. for clipping)
  int64_t step_count() const { return step_count_; }
  virtual std::string name() const = 0;

  // Sum over groups of every attached regularizer's loss(group, step_count()); undefined if none.
  Variable regularization_loss();
  // Forwards the training position (t in fractional epochs of `total`, set by the fit loop before
  // every step) to every attached regularizer, once per regularizer even when it is attached to
  // several groups.
  void set_position(double t, double total);

  virtual std::map<std::string, Tensor> state_dict() const;
  virtual void load_state_dict(const std::map<std::string, Tensor>& state);

  // State of parameter i of group g (empty before its first update).
  const ParamState& state(size_t g, size_t i) const { return state_[g][i]; }

 protected:
  // Checks a group's hyper-parameters for this optimizer; throws naming the group.
  virtual void check_group(const ParamGroup& group) const = 0;
  // Updates one parameter in place. `grad` has the parameter's dtype, shape and memory layout.
  virtual void update(const ParamGroup& group, Variable& param, const Tensor& grad, ParamState& state) = 0;
  // Buffer names this optimizer may keep per parameter (checked by load_state_dict).
  virtual std::vector<std::string> buffer_names() const = 0;

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<ParamState>> state_;  // [group][param]
  int64_t step_count_ = 0;
};

// ---- helpers for optimizer implementations ----
namespace detail {
// A zero tensor with the parameter's dtype, shape and dense layout.
Tensor zeros_like_param(const Tensor& param);
// Calls fn(lo, hi) over [0, n), in parallel for large n (elementwise updates: thread-count
// independent). Grain large enough that scheduling cost is negligible next to a fused pass.
template <class F>
void parallel_elementwise(int64_t n, F&& fn) {
  parallel_for(0, n, int64_t{1} << 15, std::forward<F>(fn));
}
}  // namespace detail

}  // namespace lowbit::optim
