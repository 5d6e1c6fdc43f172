#include "autograd/kink_tape.h"

namespace lowbit {
namespace {
thread_local KinkTape* g_tape = nullptr;
}  // namespace

KinkTape::Scope::Scope(KinkTape& tape, Mode mode) : prev_(g_tape), prev_mode_(tape.mode_) {
  tape.mode_ = mode;
  if (mode == Mode::replay) tape.next_ = 0;
  g_tape = &tape;
}

KinkTape::Scope::~Scope() {
  if (g_tape) g_tape->mode_ = prev_mode_;
  g_tape = prev_;
}

KinkTape* KinkTape::current() { return g_tape; }

void KinkTape::push(const char* op, Tensor t) { entries_.push_back({op, std::move(t)}); }

const Tensor& KinkTape::next(const char* op, const Shape& shape) {
  LOWBIT_CHECK(next_ < entries_.size(), "kink replay: ", op, " is branch ", next_ + 1, " but the recorded pass had ",
               entries_.size(), " (the replayed forward pass differs from the recorded one)");
  const Entry& e = entries_[next_++];
  LOWBIT_CHECK(e.op == op && e.t.shape() == shape, "kink replay: branch ", next_, " was recorded by ", e.op, " on ",
               shape_str(e.t.shape()), ", replayed by ", op, " on ", shape_str(shape),
               " (the replayed forward pass differs from the recorded one)");
  return e.t;
}

}  // namespace lowbit
