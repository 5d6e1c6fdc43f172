// Neural-network ops on logical NCHW Variables, computed channels-last (NHWC) by the kernels in
// core/kernels. Inputs in any layout are accepted; 4-d results are channels-last in memory
// (MemoryFormat::channels_last), so a network that starts channels-last never converts again.
//
// Gradient convention as in autograd/ops.h. Every op here supports double backward:
//   conv2d      backward = conv2d_input_grad / conv2d_weight_grad, themselves differentiable ops.
//   max_pool2d  backward scatters to the argmax; its backward gathers (and vice versa).
//   avg pools   linear: backward and forward are each other's adjoints.
//   batch_norm  fused kernel backward. Recorded (create_graph), its dx, dgamma, dbeta are nodes over
//               one fused kernel call whose own backward (double backward, gradient-l1 training) is
//               the fused kernels::batchnorm_backward_backward; composed from primitive ops only when
//               that second backward is itself recorded (third derivatives).
#pragma once

#include <array>
#include <cstdint>

#include "autograd/variable.h"
#include "core/random.h"

namespace lowbit {

struct Conv2dOptions {
  std::array<int64_t, 2> stride{1, 1};
  std::array<int64_t, 2> padding{0, 0};
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
};

// x [N, C, H, W], weight [K, C/groups, R, S], bias [K] or undefined -> [N, K, P, Q].
// groups == C with K a multiple of C runs the depthwise kernel.
Variable conv2d(const Variable& x, const Variable& weight, const Variable& bias = Variable(),
                const Conv2dOptions& opt = {});
// The adjoints of conv2d, exposed as ops so that backward passes can be recorded.
Variable conv2d_input_grad(const Variable& grad_out, const Variable& weight, const Shape& input_shape,
                           const Conv2dOptions& opt);
Variable conv2d_weight_grad(const Variable& x, const Variable& grad_out, const Shape& weight_shape,
                            const Conv2dOptions& opt);

struct Pool2dOptions {
  std::array<int64_t, 2> kernel{2, 2};
  std::array<int64_t, 2> stride{0, 0};  // 0 = kernel size (PyTorch's default)
  std::array<int64_t, 2> padding{0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg_pool2d only
};

Variable max_pool2d(const Variable& x, const Pool2dOptions& opt);
Variable avg_pool2d(const Variable& x, const Pool2dOptions& opt);
// [N, C, H, W] -> [N, C]: mean over H and W.
Variable global_avg_pool2d(const Variable& x);

// Batch normalisation over dim 1 of x [N, C] or [N, C, H, W]. In training, batch statistics
// normalise (biased variance) and running_mean / running_var (if defined) move by `momentum`
// toward the batch mean / unbiased variance; in eval the running statistics normalise.
// gamma / beta may be undefined (affine = false).
Variable batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                    Tensor running_var, bool training, double momentum = 0.1, double eps = 1e-5);
// relu(batch_norm(...)) with the ReLU fused into the kernels: one pass over the activations each way
// instead of two (the batch norm's own output is never materialised). Same values and gradients
// as the composition (gradient 0 where the normalised value is <= 0); double backward composes.
Variable batch_norm_relu(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                         Tensor running_var, bool training, double momentum = 0.1, double eps = 1e-5);
// Synchronized batch norm (data parallelism, docs/distributed.md): batch_norm in training mode with the
// statistics of every rank's share of the global batch (per-channel mean and M2 summed over the ranks),
// and a backward whose dx uses the global sums of dy and dy (x - mean), so the gradients cross the
// ranks as well; dgamma, dbeta are the rank's own. Running statistics move toward the global mean /
// unbiased variance. Fused kernels (kernels::batchnorm_stats, _backward_sums, _backward_dx), one
// all-reduce each way; recorded (create_graph), the same op composed from primitive ops and
// all_reduce_sum is differentiated. Every rank must call it at the same points of its forward and
// backward. In one process it equals batch_norm(..., training = true).
Variable sync_batch_norm(const Variable& x, const Variable& gamma, const Variable& beta, Tensor running_mean,
                         Tensor running_var, double momentum = 0.1, double eps = 1e-5);

// Inverted dropout: in training zeroes each element with probability p and scales the rest by
// 1 / (1 - p); identity otherwise.
Variable dropout(const Variable& x, double p, bool training, Generator& gen);

}  // namespace lowbit
