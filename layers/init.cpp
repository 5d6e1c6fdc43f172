#include "layers/init.h"

#include "core/error.h"

namespace lowbit::init {

std::pair<int64_t, int64_t> fans(const Tensor& t) {
  LOWBIT_CHECK(t.defined() && t.dim() >= 2, "init::fans: need a tensor with at least 2 dims, got ",
               t.defined() ? shape_str(t.shape()) : std::string("undefined"));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

double calculate_gain(Nonlinearity nl, double param) {
  switch (nl) {
    case Nonlinearity::linear: return 1.0;
    case Nonlinearity::sigmoid: return 1.0;
    case Nonlinearity::tanh: return 5.0 / 3.0;
    case Nonlinearity::relu: return std::sqrt(2.0);
    case Nonlinearity::leaky_relu: return std::sqrt(2.0 / (1.0 + param * param));
  }
  return 1.0;
}

Tensor& uniform_(Tensor& t, double low, double high, Generator& gen) {
  LOWBIT_CHECK(t.defined() && is_floating(t.dtype()), "init::uniform_: need a defined floating tensor");
  t.copy_(Tensor::rand(t.shape(), gen, t.dtype(), low, high));
  return t;
}

Tensor& normal_(Tensor& t, double mean, double std, Generator& gen) {
  LOWBIT_CHECK(t.defined() && is_floating(t.dtype()), "init::normal_: need a defined floating tensor");
  t.copy_(Tensor::randn(t.shape(), gen, t.dtype(), mean, std));
  return t;
}

namespace {
double kaiming_std(const Tensor& t, double a, FanMode mode, Nonlinearity nl) {
  const auto [fan_in, fan_out] = fans(t);
  const int64_t fan = mode == FanMode::fan_in ? fan_in : fan_out;
  LOWBIT_CHECK(fan > 0, "init::kaiming: zero fan for shape ", shape_str(t.shape()));
  return calculate_gain(nl, a) / std::sqrt(static_cast<double>(fan));
}
}  // namespace

Tensor& kaiming_uniform_(Tensor& t, double a, FanMode mode, Nonlinearity nl, Generator& gen) {
  const double bound = std::sqrt(3.0) * kaiming_std(t, a, mode, nl);
  return uniform_(t, -bound, bound, gen);
}

Tensor& kaiming_normal_(Tensor& t, double a, FanMode mode, Nonlinearity nl, Generator& gen) {
  return normal_(t, 0.0, kaiming_std(t, a, mode, nl), gen);
}

Tensor& xavier_uniform_(Tensor& t, double gain, Generator& gen) {
  const auto [fan_in, fan_out] = fans(t);
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return uniform_(t, -bound, bound, gen);
}

Tensor& xavier_normal_(Tensor& t, double gain, Generator& gen) {
  const auto [fan_in, fan_out] = fans(t);
  return normal_(t, 0.0, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)), gen);
}

void default_layer_init_(Tensor& weight, Tensor* bias, Generator& gen) {
  kaiming_uniform_(weight, std::sqrt(5.0), FanMode::fan_in, Nonlinearity::leaky_relu, gen);
  if (bias && bias->defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fans(weight).first));
    uniform_(*bias, -bound, bound, gen);
  }
}

}  // namespace lowbit::init
