// Module: the base of every layer and model (PyTorch's nn.Module, in idiomatic C++).
//
// Contract
//   - A module owns parameters (Variable leaves, requires_grad), buffers (Tensors such as batch-norm
//     running statistics) and child modules, each registered under a local name; hierarchical names
//     join local names with '.', depth first in registration order: "layer2.1.conv1.weight".
//   - operator()(x) runs forward(x) and then the output hook, if any; containers and models call
//     their children through operator() so that hooks installed by quant/ always apply.
//   - state_dict() tensors share storage with the module; load_state_dict copies values in.
//   - Modules are created with std::make_shared and are neither copyable nor movable.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"
#include "core/error.h"
#include "core/tensor.h"

namespace lowbit {

using VariableTransform = std::function<Variable(const Variable&)>;

class Module : public std::enable_shared_from_this<Module> {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  virtual Variable forward(const Variable& x) = 0;
  // Calls forward(x), then the output hook if set.
  Variable operator()(const Variable& x);

  virtual std::string type_name() const = 0;             // "Conv2d", "Linear", ...
  virtual std::string extra_repr() const { return ""; }  // "3, 16, kernel=3x3, stride=1, pad=1"

  // ---- registration (called by subclass constructors); local names, no '.' ----
  Variable& register_parameter(const std::string& name, Tensor init, bool requires_grad = true);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    LOWBIT_CHECK(m != nullptr, type_name(), "::register_module: module '", name, "' is null");
    check_new_name(name, "register_module");
    children_.emplace_back(name, std::static_pointer_cast<Module>(m));
    return m;
  }

  // ---- queries, registration order, depth first ----
  std::vector<std::pair<std::string, Variable>> named_parameters(bool recurse = true) const;
  std::vector<Variable> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules();  // self first, as ""
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  Variable& param(const std::string& local_name);  // throws naming the module if missing
  Tensor& buffer(const std::string& local_name);   // throws naming the module if missing
  bool has_param(const std::string& local_name) const;

  // Visitor for per-layer settings: fn(full_name, module) for self ("") and every descendant.
  void apply(const std::function<void(const std::string&, Module&)>& fn);

  void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }

  int64_t num_parameters(bool trainable_only = false) const;
  void zero_grad();

  // Parameters and buffers by full name; the tensors share storage with the module.
  std::map<std::string, Tensor> state_dict() const;
  // Copies values in. strict: missing or unexpected keys and dtype mismatches throw naming the key;
  // shape mismatches always throw. Non-strict skips missing/unexpected keys and converts dtypes.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
  // Converts floating parameters and buffers (e.g. to float64 for gradient checks). The Variables keep
  // their identity (optimizers and hooks holding them stay valid); gradients are dropped.
  void to(DType dtype);

  std::string str() const;  // printable tree like PyTorch's repr

  // Quantization hook (set by quant/, never by layers/): applied to the module's output in operator().
  void set_output_hook(VariableTransform hook) { output_hook_ = std::move(hook); }
  const VariableTransform& output_hook() const { return output_hook_; }
  // y through the output hook (identity without one): what operator() does after forward(). For
  // callers that compute a module's output in a fused op (BatchNorm + ReLU) instead of forward().
  Variable apply_output_hook(const Variable& y) const { return output_hook_ ? output_hook_(y) : y; }

 protected:
  // Called by train(); layers with mode-dependent state may override (call the base).
  virtual void on_train_mode(bool) {}

 private:
  void check_new_name(const std::string& name, const char* what) const;
  void collect_modules(const std::string& prefix, std::vector<std::pair<std::string, std::shared_ptr<Module>>>& out,
                       const std::shared_ptr<Module>& self);
  void apply_impl(const std::string& prefix, const std::function<void(const std::string&, Module&)>& fn);
  void str_impl(std::ostream& os, int indent) const;

  // deques: references returned by register_* stay valid as more entries are added.
  std::deque<std::pair<std::string, Variable>> params_;
  std::deque<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  VariableTransform output_hook_;
};

std::ostream& operator<<(std::ostream& os, const Module& m);

// Joins a prefix and a local name with '.' ("" + "fc" = "fc").
std::string join_name(const std::string& prefix, const std::string& name);

}  // namespace lowbit
