// LSTM: a single-layer long short-term memory (PyTorch's nn.LSTM with num_layers = 1,
// batch_first = false), composed from autograd ops so that gradients follow by autograd.
//
// Contract
//   - Parameters (registration order, PyTorch's names without the "_l0" suffix):
//       weight_ih [4H, I], weight_hh [4H, H], bias_ih [4H], bias_hh [4H] (the biases only with bias).
//     The rows of each come in gate order i, f, g, o (input, forget, cell, output), as PyTorch.
//   - Init as PyTorch: every parameter U(-1/sqrt(H), 1/sqrt(H)), drawn in registration order.
//   - One step, x [N, I], state (h, c) each [N, H]:
//       z  = x W_ih^T + b_ih + h W_hh^T + b_hh                      [N, 4H]
//       i  = sigmoid(z[:, 0:H]),  f = sigmoid(z[:, H:2H]),  g = tanh(z[:, 2H:3H]),  o = sigmoid(z[:, 3H:4H])
//       c' = f * c + i * g,       h' = o * tanh(c')
//   - forward(x), x [T, N, I] (sequence first), starts from the zero state and returns every h_t,
//     [T, N, H]; forward(x, state) starts from `state` and also returns the final state. Both equal
//     T calls of step() (x W_ih^T + b_ih is computed for all T at once, which may differ from step()
//     in the last bits of floating-point rounding).
//   - Gradients: ordinary reverse mode through the composed ops (autograd/ops.h convention), with
//     respect to the input, the initial state (h0, c0 when they require grad) and every parameter.
//   - The parameters' dtype is the computation's (module.to(DType::f64) for gradient checks); the
//     input and state must share it.
#pragma once

#include <cstdint>
#include <utility>

#include "core/random.h"
#include "layers/module.h"

namespace lowbit {

// Hidden and cell state, each [N, H].
struct LSTMState {
  Variable h, c;
};

class LSTM : public Module {
 public:
  LSTM(int64_t input_size, int64_t hidden_size, bool bias = true, Generator& gen = default_generator());

  // x [T, N, I] -> h_1..h_T [T, N, H], from the zero state.
  Variable forward(const Variable& x) override;
  // x [T, N, I] from `state` -> (h_1..h_T [T, N, H], final state (h_T, c_T)).
  std::pair<Variable, LSTMState> forward(const Variable& x, const LSTMState& state);
  // One time step: x [N, I] -> (h' [N, H], (h', c')).
  std::pair<Variable, LSTMState> step(const Variable& x, const LSTMState& state);
  // h = c = 0, [N, H], in the parameters' dtype (no gradient).
  LSTMState zero_state(int64_t batch) const;

  std::string type_name() const override { return "LSTM"; }
  std::string extra_repr() const override;

  int64_t input_size() const { return in_; }
  int64_t hidden_size() const { return hidden_; }
  bool has_bias() const { return has_bias_; }
  void reset_parameters(Generator& gen = default_generator());

 private:
  void check_state(const LSTMState& state, int64_t batch, const char* where) const;
  // The recurrence given the input projection xw = x W_ih^T + b_ih, [N, 4H].
  LSTMState cell(const Variable& xw, const LSTMState& state);

  int64_t in_, hidden_;
  bool has_bias_;
  Variable weight_ih_, weight_hh_, bias_ih_, bias_hh_;
};

}  // namespace lowbit
