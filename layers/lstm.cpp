#include "layers/lstm.h"

#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "layers/init.h"

namespace lowbit {

LSTM::LSTM(int64_t input_size, int64_t hidden_size, bool bias, Generator& gen)
    : in_(input_size), hidden_(hidden_size), has_bias_(bias) {
  LOWBIT_CHECK(in_ > 0 && hidden_ > 0, "LSTM: sizes must be positive, got input_size=", in_, ", hidden_size=", hidden_);
  weight_ih_ = register_parameter("weight_ih", Tensor::empty({4 * hidden_, in_}));
  weight_hh_ = register_parameter("weight_hh", Tensor::empty({4 * hidden_, hidden_}));
  if (has_bias_) {
    bias_ih_ = register_parameter("bias_ih", Tensor::empty({4 * hidden_}));
    bias_hh_ = register_parameter("bias_hh", Tensor::empty({4 * hidden_}));
  }
  reset_parameters(gen);
}

void LSTM::reset_parameters(Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden_));
  for (auto& p : parameters(false)) {
    Tensor t = p.data();
    init::uniform_(t, -bound, bound, gen);
  }
}

LSTMState LSTM::zero_state(int64_t batch) const {
  LOWBIT_CHECK(batch > 0, "LSTM::zero_state: batch must be positive, got ", batch);
  const DType dt = weight_ih_.dtype();
  return {Variable(Tensor::zeros({batch, hidden_}, dt)), Variable(Tensor::zeros({batch, hidden_}, dt))};
}

void LSTM::check_state(const LSTMState& state, int64_t batch, const char* where) const {
  const Shape want{batch, hidden_};
  LOWBIT_CHECK(state.h.defined() && state.c.defined(), "LSTM::", where, ": state h and c must be defined");
  LOWBIT_CHECK(state.h.shape() == want && state.c.shape() == want, "LSTM::", where, ": expected state h, c ",
               shape_str(want), ", got ", shape_str(state.h.shape()), " and ", shape_str(state.c.shape()));
}

LSTMState LSTM::cell(const Variable& xw, const LSTMState& state) {
  Variable z = add(xw, linear(state.h, weight_hh_, bias_hh_));  // [N, 4H]
  const int64_t H = hidden_;
  const Variable i = sigmoid(narrow(z, 1, 0, H));
  const Variable f = sigmoid(narrow(z, 1, H, H));
  const Variable g = tanh(narrow(z, 1, 2 * H, H));
  const Variable o = sigmoid(narrow(z, 1, 3 * H, H));
  Variable c = add(mul(f, state.c), mul(i, g));
  Variable h = mul(o, tanh(c));
  return {h, c};
}

std::pair<Variable, LSTMState> LSTM::step(const Variable& x, const LSTMState& state) {
  LOWBIT_CHECK(x.dim() == 2 && x.size(1) == in_, "LSTM::step: expected input [N, ", in_, "], got ",
               shape_str(x.shape()));
  check_state(state, x.size(0), "step");
  LSTMState next = cell(linear(x, weight_ih_, bias_ih_), state);
  return {next.h, next};
}

std::pair<Variable, LSTMState> LSTM::forward(const Variable& x, const LSTMState& state) {
  LOWBIT_CHECK(x.dim() == 3 && x.size(2) == in_ && x.size(0) > 0, "LSTM::forward: expected input [T, N, ", in_,
               "] with T > 0, got ", shape_str(x.shape()));
  const int64_t T = x.size(0);
  check_state(state, x.size(1), "forward");
  const Variable xw = linear(x, weight_ih_, bias_ih_);  // [T, N, 4H], every step's input projection at once
  std::vector<Variable> hs;
  hs.reserve(static_cast<size_t>(T));
  LSTMState s = state;
  for (int64_t t = 0; t < T; ++t) {
    s = cell(select(xw, 0, t), s);
    hs.push_back(s.h);
  }
  return {stack(hs, 0), s};
}

Variable LSTM::forward(const Variable& x) {
  LOWBIT_CHECK(x.dim() == 3, "LSTM::forward: expected input [T, N, ", in_, "], got ", shape_str(x.shape()));
  return forward(x, zero_state(x.size(1))).first;
}

std::string LSTM::extra_repr() const { return detail::concat(in_, ", ", hidden_, has_bias_ ? "" : ", bias=false"); }

}  // namespace lowbit
