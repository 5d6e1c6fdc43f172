// Elementwise activations (shape-preserving, any layout).
//   ReLU: max(x, 0) (gradient 0 at 0);  ReLU6: clamp(x, 0, 6);  Hardtanh(lo, hi): clamp(x, lo, hi), gradient 1
//   on [lo, hi] (PyTorch's clamp convention);  Sigmoid, Tanh.
#pragma once

#include "layers/module.h"

namespace lowbit {

class ReLU : public Module {
 public:
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "ReLU"; }
};

class Hardtanh : public Module {
 public:
  explicit Hardtanh(double min_val = -1.0, double max_val = 1.0);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Hardtanh"; }
  std::string extra_repr() const override;
  double min_val() const { return lo_; }
  double max_val() const { return hi_; }

 private:
  double lo_, hi_;
};

class ReLU6 : public Hardtanh {
 public:
  ReLU6() : Hardtanh(0.0, 6.0) {}
  std::string type_name() const override { return "ReLU6"; }
  std::string extra_repr() const override { return ""; }
};

class Sigmoid : public Module {
 public:
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Sigmoid"; }
};

class Tanh : public Module {
 public:
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Tanh"; }
};

}  // namespace lowbit
