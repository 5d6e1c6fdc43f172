// Trains y = 3x - 1 by gradient descent through the installed library's public headers.
#include <lowbit.h>

#include <cmath>
#include <cstdio>

int main() {
  using namespace lowbit;
  manual_seed(0);
  Tensor x = Tensor::randn({64, 1});
  Tensor y = math::add(math::mul(x, 3.0), -1.0);
  Variable w(Tensor::zeros({1, 1}), true), b(Tensor::zeros({1}), true);
  for (int step = 0; step < 200; ++step) {
    Variable loss = mse_loss(linear(Variable(x), w, b), Variable(y));
    w.zero_grad();
    b.zero_grad();
    loss.backward();
    math::add_(w.mutable_data(), w.grad().data(), -0.1);
    math::add_(b.mutable_data(), b.grad().data(), -0.1);
  }
  const double wv = w.data().item(), bv = b.data().item();
  std::printf("consumer: w=%.4f b=%.4f\n", wv, bv);

  // A zoo model with 4-bit DoReFa weights, one SGD step.
  auto net = models::create_model("lenet5");
  quant::QuantConfig qc;
  qc.method = "dorefa";
  qc.weight_bits = 4;
  quant::attach_quantizers(*net, qc);
  optim::SGD opt({optim::ParamGroup{.name = "weights", .params = net->parameters(), .lr = 0.01}});
  Variable logits = (*net)(Variable(Tensor::randn({2, 1, 28, 28})));
  Variable loss = cross_entropy(logits, Tensor::from_vector(std::vector<int32_t>{1, 7}, {2}));
  loss.backward();
  opt.step();
  std::printf("consumer: lenet5 %lld parameters, loss %.4f\n", (long long)net->num_parameters(), loss.item());

  // The training floor: a quantization context with WaveQ, its optimizer groups.
  auto net2 = models::create_model("lenet5");
  train::QuantContext quant(*net2, {.method = "dorefa", .wbits = 4, .reg = "waveq"});
  optim::SGD opt2(quant.param_groups({.lr = 0.01}));
  std::printf("consumer: %s, %zu optimizer groups\n", quant.describe().c_str(), opt2.param_groups().size());
  if (opt2.param_groups().size() != 2) return 1;
  return (std::abs(wv - 3) < 1e-3 && std::abs(bv + 1) < 1e-3 && std::isfinite(loss.item())) ? 0 : 1;
}
