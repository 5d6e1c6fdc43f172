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
  return (std::abs(wv - 3) < 1e-3 && std::abs(bv + 1) < 1e-3) ? 0 : 1;
}
