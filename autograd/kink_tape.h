// Freezing the branches of a forward pass: a kink is where a piecewise-linear op switches branch
// (ReLU and a fused batch-norm/add + ReLU at 0, clamp at its bounds, max pooling's winner). While a
// KinkTape records, those ops push what decides their branch (the ReLU's input or output, clamp's
// input, max pooling's argmax) in call order; while it replays, the same ops, called in the same
// order on inputs of the same shapes, take the recorded branches instead of choosing them from their
// new inputs: relu(x) = x * [x_recorded > 0], max_pool(x) = x at the recorded winners, and so on, with
// the matching gradients. A replayed forward pass is therefore the linear piece the recorded pass
// sat on, the function double backward differentiates (a kink's second derivative is 0): the
// difference of the two passes' gradients at nearby weights is a finite-difference Hessian-vector
// product with no kink switches (quant::GradL1Regularizer::fd_step).
//
// The tape is the current thread's while a KinkTape::Scope lives (ops consult it; none: the usual
// ops). Only forward ops use it: keep backward passes outside the scope. Replay checks each entry's
// op and shape and throws on a mismatch or when the tape runs out (a forward pass that differs from
// the recorded one).
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"

namespace lowbit {

class KinkTape {
 public:
  enum class Mode { record, replay };

  // Makes `tape` the thread's current tape in `mode` (replay starts from the first entry); the
  // previous one is put back at scope exit.
  class Scope {
   public:
    Scope(KinkTape& tape, Mode mode);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    KinkTape* prev_;
    Mode prev_mode_;
  };

  // The thread's current tape, or nullptr.
  static KinkTape* current();
  Mode mode() const { return mode_; }
  // record: appends the tensor that decides op's branch (kept by reference, not copied).
  void push(const char* op, Tensor t);
  // replay: the next recorded tensor, which must come from `op` and have shape `shape`.
  const Tensor& next(const char* op, const Shape& shape);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string op;
    Tensor t;
  };
  std::vector<Entry> entries_;
  size_t next_ = 0;
  Mode mode_ = Mode::record;
};

}  // namespace lowbit
