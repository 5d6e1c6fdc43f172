// Gradient-l1 regularization for quantization robustness (Alizadeh et al., ICLR 2020; spec §7).
//
// The penalty (spec §7.1, one lambda per term; the spec's choice is lambda_w = lambda_a):
//
//   P = lambda_w * sum_l ||dL/dW_l||_1 + lambda_a * sum_l ||dL/da_l||_1
//
//   W_l  the weight of every Conv2d and Linear (model order; depthwise convolutions included, biases
//        and batch-norm parameters not): the float ("shadow") leaf, so with a weight quantizer
//        attached dL/dW_l is the straight-through gradient (spec convention 6).
//   a_l  the output of every activation module (ReLU, ReLU6, Hardtanh: the tensors a post-training
//        quantizer quantizes, quant/qconfig.h), as the module computed it, before its output hook
//        (an activation quantizer's input: "pre-quantization", spec §7.1).
//   L    the batch loss as the step returns it: for cross_entropy, the mean over the batch.
//
// Normalization (spec §7.1 "a per-sample gradient summed over the batch"): dL/da_l is the gradient
// of the batch-mean loss, a [B, ...] tensor whose sample-n slice is (1/B) dl_n/da_l,n (batch norm in
// training mode couples the samples; the gradient is the exact one of the batch loss). Its l1 norm
// sums every element, so the activation term is the batch mean of the per-sample l1 norms: it does not
// grow with the batch size. The weight term is the l1 norm of the batch gradient dL/dW_l (the mean of
// the per-sample gradients, not the mean of their norms). Layers are summed, not averaged.
//
// Gradient (spec §7.2 [D]): dP/dtheta = lambda_w sum_l H_{theta,W_l} sign(dL/dW_l) + lambda_a sum_l
// (d^2 L / dtheta da_l) sign(dL/da_l), Hessian-vector products that autograd gets by differentiating
// the recorded backward pass (double backpropagation, spec §7.2 (a)): penalty() calls
// grad(loss, {W, a}, create_graph = true), so (loss + P).backward() gives dL/dtheta + dP/dtheta for
// every parameter (batch-norm gamma and beta, biases and quantizer parameters too). sign(0) = 0.
// Cost: the recorded backward and its backward are 2 + 4 convolutions per layer on top of a plain
// step's 3 (every second-order op on the fast kernels: convolution's adjoints are conv ops, batch
// norm's double backward is kernels::batchnorm_backward_backward): about 3x a plain step.
//
// Range scaling (GradL1Options::scale = range; our addition, not the paper's; docs/quantization.md):
//
//   P = lambda_w * sum_l r(W_l) ||dL/dW_l||_1 + lambda_a * sum_l r(a_l) ||dL/da_l||_1,  r(x) = max|x|
//
// r(a_l) over the batch. A per-tensor min/max quantizer (spec §8.7) rounds x_l by at most step_l / 2
// with step_l proportional to r(x_l), so this is the first-order bound sum_l (step_l / 2) ||g_l||_1 on
// the loss change up to the bit-dependent constant. A Conv2d or Linear followed by batch norm is
// invariant to W -> s W while dL/dW -> dL/dW / s (and a layer whose input a feeds such a pair to
// a -> s a): the unscaled penalty can fall by growing weights and activation ranges, which coarsens
// every post-training step; the scaled one does not change. r is differentiated (at the largest
// element, ties split). weight_l1 / act_l1 then report the scaled sums.
//
// Usage (train::fit does this when `--reg grad-l1` is active; bench the same):
//
//   quant::GradL1Regularizer gl1(model, {.lambda_w = 0.05, .lambda_a = 0.05});
//   Variable loss, penalty;
//   {
//     quant::ActivationCapture capture = gl1.capture();  // hooks chained in, restored at scope exit
//     loss = cross_entropy(model(x), labels);
//     penalty = gl1.penalty(loss, capture.activations()).value;
//   }
//   (loss + penalty).backward();
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"

namespace lowbit::quant {

// How dP/dtheta is computed: exact (double backward, spec §7.2 (a)) or fd (forward differences of
// the gradient, spec §7.2 (b); GradL1Regularizer::fd_step).
enum class GradL1Mode { exact, fd };
// Each term's weight: 1 (the paper's penalty) or the tensor's range max|x| (range scaling above).
// range_fixed and range_only are ablations of range: the same P, its gradient cut to one of its two
// parts, dP/dtheta = lambda sum_l r_l H_l sign(g_l) + lambda sum_l ||g_l||_1 dr_l/dtheta (H_l: the
// Hessian rows of x_l): range_fixed keeps the first (r held constant), range_only the second (the
// norms held constant: no second-order term; a plain step plus one backward of the ranges).
enum class GradL1Scale { none, range, range_fixed, range_only };

struct GradL1Options {
  // Weight and activation terms (spec §7.1: one lambda). The paper's 0.05 (§7.2, ImageNet, its own
  // normalization) diverges a trained ResNet-20 here (P ~ 170 against a loss of 0.1: the sums run over
  // every element); 1e-3 gives P ~ 1 (docs/quantization.md, "lambda").
  double lambda_w = 1e-3;
  double lambda_a = 1e-3;
  GradL1Mode mode = GradL1Mode::exact;
  GradL1Scale scale = GradL1Scale::none;
  double fd_step = 1e-6;  // fd: the size of the perturbation of each weight and activation element
  // fd: the perturbed pass takes the first pass's ReLU / clamp branches and max-pooling winners
  // (autograd/kink_tape.h), so no unit switches between the passes. false: each pass chooses its own
  // (the plain forward difference; for comparisons).
  bool fd_freeze_kinks = true;
};

// Scoped capture of the activation modules' outputs: while it lives, each module's output hook is
// wrapped (the hook it had — an activation quantizer, say — still runs after the capture, on the same
// input), and every output that requires grad is recorded in call order (a module called twice
// gives two entries). The destructor puts the previous hooks back. Movable, not copyable.
class ActivationCapture {
 public:
  explicit ActivationCapture(std::vector<std::shared_ptr<Module>> modules);
  ActivationCapture(ActivationCapture&&) noexcept;
  ActivationCapture& operator=(ActivationCapture&&) = delete;
  ActivationCapture(const ActivationCapture&) = delete;
  ActivationCapture& operator=(const ActivationCapture&) = delete;
  ~ActivationCapture();

  const std::vector<Variable>& activations() const { return *captured_; }

 private:
  std::vector<std::pair<std::shared_ptr<Module>, VariableTransform>> saved_;
  std::shared_ptr<std::vector<Variable>> captured_;
};

// The value of one step's penalty and its two norms (unweighted), for logging.
struct GradL1Penalty {
  Variable value;                        // lambda_w * weight_l1 + lambda_a * act_l1, differentiable
  double weight_l1 = 0;                  // sum_l ||dL/dW_l||_1 (range scaling: sum_l r(W_l) ||dL/dW_l||_1)
  double act_l1 = 0;                     // sum_l ||dL/da_l||_1 (range scaling: sum_l r(a_l) ||dL/da_l||_1)
  int64_t weights = 0, activations = 0;  // tensors that entered (reachable from the loss)
};

class GradL1Regularizer {
 public:
  // Finds the weights (Conv2d, Linear) and the activation modules of `model`. Throws if it has
  // neither, or for a negative lambda.
  GradL1Regularizer(Module& model, GradL1Options options);

  ActivationCapture capture() const { return ActivationCapture(activation_modules_); }
  // P for `loss` (a scalar recorded with grad mode on) and the activations captured during its
  // forward pass. Terms with lambda 0 are left out (their gradients are not taken). Weights or
  // activations the loss does not reach are skipped. The loss's graph is kept (create_graph), so
  // (loss + P).backward() works afterwards.
  // Data parallelism (across_ranks): `loss` is this rank's share-weighted loss (n_r / N times its mean),
  // so the whole batch's loss is the ranks' sum; each dL/dW_l is all-reduced inside the graph
  // (all_reduce_sum) before its norm, and the activation term is summed over the ranks: P is the
  // whole batch's on every rank, and its backward crosses the ranks. Every rank must call it. Range
  // scaling is not supported across ranks (r(a_l) would need a differentiable all-reduce max).
  GradL1Penalty penalty(const Variable& loss, const std::vector<Variable>& activations,
                        bool across_ranks = false) const;

  // The finite-difference variant (spec §7.2 (b), our approximation, not the paper's method). With
  // s_W = sign(dL/dW), s_a = sign(dL/da) and P's gradient as the directional derivative of dL/dtheta,
  //   dP/dtheta = d/de dL/dtheta (W + e lambda_w s_W, a + e lambda_a s_a) at e = 0
  //             ~ (g_e - g_0) / e,   e = fd_step / max(lambda_w, lambda_a),
  // g_e the gradient of the loss with every weight moved by e lambda_w s_W and every activation by
  // e lambda_a s_a (added to the module's output before its hook). One extra forward and backward
  // pass instead of a backward of the backward: about twice a plain step.
  //
  // `forward` runs the step's forward pass and returns the loss (called twice: at theta, then
  // perturbed). fd_step sets grad() of every parameter of the model to g_0 + (g_e - g_0) / e
  // (added to a gradient already there, as backward does) and returns P at theta (value: a
  // constant). Buffers (batch-norm statistics) and Dropout generators are put back between the two
  // passes, so the second sees the same statistics and masks, and left as the first pass left them;
  // the weights are restored bit for bit. A non-finite loss skips the second pass (grads: g_0).
  // Range scaling: the perturbation of x_l is scaled by r(x_l) (at theta), and P's gradient through
  // r, sum_l lambda_l ||g_l||_1 dr(x_l)/dtheta, enters as the gradient of e sum_l lambda_l ||g_l||_1
  // r(x_l) added to the second pass's loss (x_l as that pass computes it: an O(e) difference).
  // Kinks frozen (fd_freeze_kinks, the default): the second pass replays the first's ReLU and clamp
  // branches and max-pooling winners, so it runs on the same linear piece that double backward
  // differentiates, and the difference is the exact Hessian-vector product up to O(e) terms (the
  // convolutions' bilinear cross terms, batch norm's curvature). Not frozen, a ReLU unit within the
  // step of 0 switches between the passes (a max-pooling tie of ReLU zeros breaks): an O(1) error a
  // smaller step does not remove. Measured against the exact gradient (docs/quantization.md). With a
  // weight quantizer the perturbed shadow weights may round to the same levels: the difference then
  // misses the straight-through curvature the exact mode sees.
  GradL1Penalty fd_step(Module& model, const std::function<Variable()>& forward) const;

  // The two sums of P (weight_l1, act_l1; value undefined) at the model's present parameters on one
  // batch, whatever lambdas and mode are set: `forward` runs once with the activations captured and
  // the sums come from the exact gradients (no graph kept, no parameter's grad() touched); the
  // buffers (batch-norm statistics) and the Dropout and default generators are put back afterwards,
  // so training goes on as if it had not run. For balancing lambda_a (train::QuantContext).
  GradL1Penalty measure(Module& model, const std::function<Variable()>& forward) const;
  // Sets lambda_a (>= 0, finite), e.g. to lambda_w * weight_l1 / act_l1 of measure().
  void set_lambda_a(double lambda_a);

  const GradL1Options& options() const { return options_; }
  const std::vector<std::pair<std::string, Variable>>& weights() const { return weights_; }
  const std::vector<std::string>& activation_names() const { return activation_names_; }

 private:
  GradL1Options options_;
  std::vector<std::pair<std::string, Variable>> weights_;
  std::vector<std::shared_ptr<Module>> activation_modules_;
  std::vector<std::string> activation_names_;
};

}  // namespace lowbit::quant
