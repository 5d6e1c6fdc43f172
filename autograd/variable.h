// Variable: a Tensor with reverse-mode automatic differentiation.
//
// Contract
//   - Ops on Variables record a dynamic graph while grad mode is on and an input requires grad:
//     each result gets a Node holding its inputs and a backward function.
//   - backward() from a one-element output (gradient 1) or with a given gradient accumulates
//     d(output)/d(leaf) into every leaf's grad(). Leaves are Variables the user created with
//     requires_grad; gradients accumulate until zero_grad().
//   - Backward functions are written with Variable ops. With create_graph the backward pass is
//     itself recorded, so gradients of gradients work (Gradient-L1 training, gradgradcheck).
//   - Without retain_graph (default; on by default with create_graph) a graph is released after
//     one backward pass, as in PyTorch.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lowbit {

struct Node;
struct VariableImpl;

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false);

  bool defined() const { return impl_ != nullptr; }
  const Tensor& data() const;
  // In-place access for optimizers and initialisers; never use it inside a recorded graph.
  Tensor& mutable_data();

  bool requires_grad() const;
  Variable& requires_grad_(bool on = true);  // leaves only
  bool is_leaf() const;
  const std::shared_ptr<Node>& grad_fn() const;

  // Accumulated gradient (undefined until a backward pass reaches this leaf).
  Variable grad() const;
  void set_grad(const Variable& g);
  void zero_grad();  // drops the gradient (PyTorch's set_to_none)

  void backward(const Variable& gradient = Variable(), bool retain_graph = false, bool create_graph = false) const;

  // Leaves only: backward() calls `hook` once per pass that reaches this leaf, as soon as the leaf's
  // gradient is final (every node using the leaf has run) and stored in grad(), while the rest of the
  // graph is still being differentiated; on backward()'s thread. grad() (the functional form) never
  // calls it. The data-parallel fit loop starts each gradient bucket's all-reduce from it. An empty
  // function removes the hook.
  void set_grad_ready_hook(std::function<void()> hook);

  Variable detach() const;  // same data, no graph

  // Shape passthroughs.
  const Shape& shape() const { return data().shape(); }
  int64_t dim() const { return data().dim(); }
  int64_t size(int64_t d) const { return data().size(d); }
  int64_t numel() const { return data().numel(); }
  DType dtype() const { return data().dtype(); }
  double item() const { return data().item(); }

  const std::string& name() const;
  Variable& set_name(std::string name);

  VariableImpl* impl() const { return impl_.get(); }
  bool same(const Variable& o) const { return impl_ == o.impl_; }
  // Handles sharing this Variable (1: this one only). The engine sums gradients into a buffer in place
  // when nothing else can see it.
  long use_count() const { return impl_.use_count(); }

 private:
  friend Variable make_result(Tensor, const char*, std::vector<Variable>,
                              std::function<std::vector<Variable>(const Variable&, const Variable&)>, bool);
  friend Variable output_of(const std::shared_ptr<Node>& node);
  std::shared_ptr<VariableImpl> impl_;
};

// Backward function of a node: (gradient of the output, the output itself) -> one gradient per
// input, in input order; an undefined Variable means "zero" / "no gradient".
using BackwardFn = std::function<std::vector<Variable>(const Variable& grad_out, const Variable& out)>;

struct Node : std::enable_shared_from_this<Node> {
  std::string name;              // op name, for error messages and graph dumps
  std::vector<Variable> inputs;  // the op's inputs (edges of the graph)
  BackwardFn backward;           // released after use unless retain_graph
  Tensor saved_output;           // the forward result, kept only if the op asked for it
  Shape out_shape;
  DType out_dtype = DType::f32;
};

struct VariableImpl {
  Tensor data;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;
  std::shared_ptr<VariableImpl> grad;
  std::string name;
  std::function<void()> grad_ready_hook;  // Variable::set_grad_ready_hook
};

// Grad mode: thread-local switch consulted by every op.
struct GradMode {
  static bool enabled();
  static void set_enabled(bool on);
};

class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

class GradModeGuard {
 public:
  explicit GradModeGuard(bool on) : prev_(GradMode::enabled()) { GradMode::set_enabled(on); }
  ~GradModeGuard() { GradMode::set_enabled(prev_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};

// The one place ops create results: wraps `out`, and when grad mode is on and any input
// requires grad, records a Node named `op` with `backward`. With save_output the result tensor
// is kept so `backward` may use the output (it receives it as its second argument).
Variable make_result(Tensor out, const char* op, std::vector<Variable> inputs, BackwardFn backward,
                     bool save_output = false);

// Functional gradients: d(sum_i <outputs[i], grad_outputs[i]>)/d(inputs), returned in input
// order without touching .grad(). Inputs may be leaves or intermediate results. With
// create_graph the results are differentiable. allow_unused: unreachable inputs give undefined
// Variables instead of an error.
std::vector<Variable> grad(const std::vector<Variable>& outputs, const std::vector<Variable>& inputs,
                           const std::vector<Variable>& grad_outputs = {}, bool retain_graph = false,
                           bool create_graph = false, bool allow_unused = false);

}  // namespace lowbit
