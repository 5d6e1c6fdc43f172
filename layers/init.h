// Weight initialisers (PyTorch's torch.nn.init), filling a tensor in place.
//
//   fan_in  = size(1) * receptive field, fan_out = size(0) * receptive field, where the receptive
//   field is the product of dims 2.. (1 for 2-d Linear weights [out, in]; [K, C/groups, R, S] for conv).
//   gain(relu) = sqrt(2); gain(leaky_relu, a) = sqrt(2 / (1 + a^2)); gain(linear) = 1.
//   kaiming_uniform_: U(-b, b), b = gain * sqrt(3 / fan);  kaiming_normal_: N(0, gain / sqrt(fan)).
//   xavier_uniform_:  U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)); xavier_normal_: N(0, gain sqrt(2 / (fan_in +
//   fan_out))).
// PyTorch's Conv2d/Linear default: kaiming_uniform_(w, a = sqrt(5)) (so b = 1 / sqrt(fan_in)) and bias
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
// Every draw comes from a counter-based Generator (default_generator() unless given): results depend
// only on the seed, never on the thread count.
#pragma once

#include <cmath>
#include <string>
#include <utility>

#include "core/random.h"
#include "core/tensor.h"

namespace lowbit::init {

enum class FanMode { fan_in, fan_out };
enum class Nonlinearity { linear, relu, leaky_relu, tanh, sigmoid };

// {fan_in, fan_out} of a weight tensor with at least 2 dims.
std::pair<int64_t, int64_t> fans(const Tensor& t);
double calculate_gain(Nonlinearity nl, double param = 0.01);

Tensor& uniform_(Tensor& t, double low, double high, Generator& gen = default_generator());
Tensor& normal_(Tensor& t, double mean, double std, Generator& gen = default_generator());

Tensor& kaiming_uniform_(Tensor& t, double a = 0, FanMode mode = FanMode::fan_in,
                         Nonlinearity nl = Nonlinearity::leaky_relu, Generator& gen = default_generator());
Tensor& kaiming_normal_(Tensor& t, double a = 0, FanMode mode = FanMode::fan_in,
                        Nonlinearity nl = Nonlinearity::leaky_relu, Generator& gen = default_generator());
Tensor& xavier_uniform_(Tensor& t, double gain = 1, Generator& gen = default_generator());
Tensor& xavier_normal_(Tensor& t, double gain = 1, Generator& gen = default_generator());

// PyTorch's default for Conv2d / Linear: weight kaiming_uniform_(a = sqrt(5)); bias (if defined)
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void default_layer_init_(Tensor& weight, Tensor* bias, Generator& gen = default_generator());

}  // namespace lowbit::init
