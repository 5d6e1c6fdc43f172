// The gradient-l1 penalty's finite-difference mode (quant/grad_l1.h, --grad-l1-mode fd) against the
// exact double backward on one batch: the cosine and the norm ratio of dP/dtheta (the step's gradient
// minus the loss's) over a range of steps, with the second pass replaying the first one's kinks (the
// default) and without. docs/quantization.md quotes its figures.
// Usage: grad_l1_fd_check [CHECKPOINT DATA MODEL [VARIANT [LAMBDA]]]
//   no arguments: a ResNet-20 (A) at random initialisation on a random batch of 32 (the test suite);
//   CHECKPOINT DATA MODEL: the model weights of a training checkpoint on the first 128 training
//   images of DATA (e.g. cifar10:DIR), lambda 1e-3 unless given.
#include <lowbit.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace lowbit;

namespace {

std::vector<Tensor> gradients(Module& model) {
  std::vector<Tensor> g;
  for (const Variable& p : model.parameters())
    g.push_back(p.grad().defined() ? p.grad().data().to(DType::f64) : Tensor::zeros(p.shape(), DType::f64));
  return g;
}

double dot(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += math::sum(math::mul(a[i], b[i])).item();
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  std::shared_ptr<Module> model;
  Tensor x, y;
  double lambda = 0.05;
  if (argc >= 4) {
    train::TrainData data = train::load_data({.dataset = argv[2], .batch = 128, .augment = "none", .limit_train = 128});
    model = train::create_model(argv[3], data, 1.0, argc > 4 ? argv[4] : "");
    model->load_state_dict(load_checkpoint(argv[1]).tensors_with_prefix("model."));
    data::Batch batch;
    data.train_loader->begin_epoch(0);
    LOWBIT_CHECK(data.train_loader->next(batch), "no training batch in ", argv[2]);
    x = batch.images, y = batch.labels;
    lambda = argc > 5 ? std::atof(argv[5]) : 1e-3;
  } else {
    model = models::create_model("resnet20", {.variant = "A", .seed = 3});
    Generator gen(5);
    x = Tensor::randn({32, 3, 32, 32}, gen);
    std::vector<int32_t> labels;
    for (int i = 0; i < 32; ++i) labels.push_back(i % 10);
    y = Tensor::from_vector(labels, {32});
  }
  model->train();
  std::map<std::string, Tensor> start;
  for (const auto& [k, v] : model->state_dict()) start[k] = v.clone();
  auto loss_of = [&] { return cross_entropy((*model)(Variable(x)), y); };

  // The loss's gradient and the exact step's, from the same state.
  model->zero_grad();
  loss_of().backward();
  const std::vector<Tensor> g_loss = gradients(*model);
  const quant::GradL1Options exact_options{.lambda_w = lambda, .lambda_a = lambda};
  const quant::GradL1Regularizer exact(*model, exact_options);
  model->load_state_dict(start);
  model->zero_grad();
  {
    quant::ActivationCapture capture = exact.capture();
    const Variable loss = loss_of();
    add(loss, exact.penalty(loss, capture.activations()).value).backward();
  }
  std::vector<Tensor> p_exact = gradients(*model);
  for (size_t i = 0; i < p_exact.size(); ++i) p_exact[i] = math::sub(p_exact[i], g_loss[i]);
  std::printf("lambda %g: |dP/dtheta| / |dL/dtheta| = %.3f\n", lambda,
              std::sqrt(dot(p_exact, p_exact) / dot(g_loss, g_loss)));
  std::printf("%-8s %-7s %12s %12s\n", "step", "kinks", "cosine", "norm ratio");
  for (double step : {1e-3, 1e-4, 1e-5, 1e-6, 1e-7})
    for (bool frozen : {true, false}) {
      quant::GradL1Options options = exact_options;
      options.mode = quant::GradL1Mode::fd;
      options.fd_step = step;
      options.fd_freeze_kinks = frozen;
      const quant::GradL1Regularizer fd(*model, options);
      model->load_state_dict(start);
      model->zero_grad();
      fd.fd_step(*model, loss_of);
      std::vector<Tensor> p_fd = gradients(*model);
      for (size_t i = 0; i < p_fd.size(); ++i) p_fd[i] = math::sub(p_fd[i], g_loss[i]);
      std::printf("%-8g %-7s %12.6f %12.4f\n", step, frozen ? "frozen" : "free",
                  dot(p_fd, p_exact) / std::sqrt(dot(p_fd, p_fd) * dot(p_exact, p_exact)),
                  std::sqrt(dot(p_fd, p_fd) / dot(p_exact, p_exact)));
    }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "grad_l1_fd_check: %s\n", e.what());
  return 1;
}
