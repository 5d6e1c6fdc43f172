// Containers and structural layers.
//   Sequential: children called in order through operator() (so hooks apply); unnamed children are named
//     "0", "1", ... by position, named ones keep their name (PyTorch's OrderedDict form).
//   Residual: y = body(x) + shortcut(x) (shortcut = identity when absent), children "body", "shortcut".
//   Lambda: a parameter-free function as a module (e.g. the option-A zero-padding shortcut).
//   Identity, Flatten(start_dim = 1, end_dim = -1).
//   StreamPoint: an identity marking a signed activation without an activation function (MobileNet
//     v2's residual stream, after the add or the linear bottleneck): quant/ installs a signed
//     activation quantizer on its output hook (docs/quantization.md); layers/ knows nothing of it.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"

namespace lowbit {

class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  template <class... M>
  explicit Sequential(std::shared_ptr<M>... modules) {
    (push_back(std::move(modules)), ...);
  }

  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(items_.size()), m);
    items_.push_back(m);
    return m;
  }
  template <class M>
  std::shared_ptr<M> push_back(const std::string& name, std::shared_ptr<M> m) {
    register_module(name, m);
    items_.push_back(m);
    return m;
  }

  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Sequential"; }

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const std::shared_ptr<Module>& operator[](size_t i) const;
  template <class M>
  std::shared_ptr<M> at(size_t i) const {
    auto p = std::dynamic_pointer_cast<M>((*this)[i]);
    LOWBIT_CHECK(p != nullptr, "Sequential::at: item ", i, " is a ", (*this)[i]->type_name());
    return p;
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<Module>> items_;
};

class Residual : public Module {
 public:
  explicit Residual(std::shared_ptr<Module> body, std::shared_ptr<Module> shortcut = nullptr);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Residual"; }

 private:
  std::shared_ptr<Module> body_, shortcut_;
};

class Lambda : public Module {
 public:
  explicit Lambda(VariableTransform fn, std::string name = "Lambda") : fn_(std::move(fn)), name_(std::move(name)) {}
  Variable forward(const Variable& x) override { return fn_(x); }
  std::string type_name() const override { return name_; }

 private:
  VariableTransform fn_;
  std::string name_;
};

class Identity : public Module {
 public:
  Variable forward(const Variable& x) override { return x; }
  std::string type_name() const override { return "Identity"; }
};

class StreamPoint : public Module {
 public:
  Variable forward(const Variable& x) override { return x; }
  std::string type_name() const override { return "StreamPoint"; }
};

class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_(start_dim), end_(end_dim) {}
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Flatten"; }
  std::string extra_repr() const override;

 private:
  int64_t start_, end_;
};

}  // namespace lowbit
