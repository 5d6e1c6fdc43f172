// Batch normalization over a [rows][C] matrix, channels innermost: NHWC activations with
// rows = N*H*W (BatchNorm2d), or [N][C] with rows = N (BatchNorm1d).
//
//   batchnorm_forward_train  batch statistics per channel: mean, biased variance var;
//                            y = (x - mean) * invstd * gamma + beta, invstd = 1 / sqrt(var + eps).
//                            Writes save_mean / save_invstd (what backward needs; may be null) and,
//                            if batch_var_unbiased is non-null, var * rows / (rows - 1) for the
//                            running-average update (NaN/inf when rows == 1).
//   batchnorm_forward_eval   y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
//   batchnorm_backward       training-mode backward through the batch statistics, given the saved
//                            mean/invstd: dbeta = sum dy, dgamma = sum dy * xhat,
//                            dx = gamma * invstd * (dy - dbeta / rows - xhat * dgamma / rows).
//                            dx, dgamma, dbeta may each be null (not computed).
//   batchnorm_backward_backward  the double backward: derivatives of batchnorm_backward's dx with respect to
//                            its inputs, given u = dP/d(dx) [rows][C] (P any function of dx; gradient-l1
//                            training differentiates the recorded backward pass). Per channel, with
//                            g = dy (masked by the fused ReLU as in backward), xhat = (x - mean) invstd,
//                            A = mean g, B = mean g xhat, U = mean u, Ux = mean u xhat, Ug = mean u g - U A:
//                              ddy    = gamma invstd (u - U - xhat Ux)           (0 where the ReLU was off)
//                              ddx    = gamma invstd^2 (-B (u - U) - Ux (g - A) + xhat (3 B Ux - Ug))
//                              dgamma = invstd sum u (g - A - xhat B)
//                            (the mean and invstd are functions of x: ddx includes their derivatives).
//                            ddy, ddx, dgamma may each be null. One pass of five sums, one elementwise.
//   batchnorm_update_running_stats  running = (1 - momentum) * running + momentum * batch.
//
// Synchronized batch norm's pieces (statistics over more rows than one call sees: every data-parallel
// rank's; autograd/ops_norm.cpp sync_batch_norm sums them over the ranks in between):
//   batchnorm_stats          per-channel mean and M2 = sum (x - mean)^2 of this call's rows, in double
//                            (the forward's statistics, chunked and merged the same way).
//   batchnorm_backward_sums  per-channel sum dy and sum dy (x - mean) in double, given the mean.
//   batchnorm_backward_dx    dx = gamma invstd (dy - sum_dy / count - xhat invstd sum_dy_dev / count),
//                            xhat = (x - mean) invstd, the sums and count those of the whole batch; with
//                            this call's own sums and count = rows it is batchnorm_backward's dx.
// gamma / beta may be null (affine = false: gamma = 1, beta = 0). rows >= 1.
//
// Fused ReLU (a BatchNorm followed by a ReLU, one pass each way instead of two):
//   forward_train with relu_affine non-null writes y = max(z, 0) (NaN -> 0, as math::relu) and the
//     per-channel affine it applied, relu_affine = [scale[C], shift[C]]: z = fma(x - save_mean, scale,
//     shift) in the element type;
//   backward with that relu_affine recomputes z bit for bit and uses g = dy * [z > 0] in place of dy
//     (so dx, dgamma, dbeta are the gradients through relu(batch_norm(x)));
//   forward_eval with relu writes max(z, 0).
//
// Statistics are computed per chunk of rows (two passes over the cache-resident chunk: sum, then
// shifted sums of deviations), accumulated in double and merged in chunk order (Chan et al.). The
// chunks depend only on (rows, C), so results are bit-identical for any thread count. Float runs
// AVX-512 when the CPU has it (portable otherwise; double always portable). The `_ref` twins are
// plain two-pass loops in double (long double for double).
#pragma once

#include <cstdint>

namespace lowbit::kernels {

void batchnorm_forward_train(int64_t rows, int64_t C, const float* x, const float* gamma, const float* beta, double eps,
                             float* y, float* save_mean, float* save_invstd, float* batch_var_unbiased = nullptr,
                             float* relu_affine = nullptr);
void batchnorm_forward_train(int64_t rows, int64_t C, const double* x, const double* gamma, const double* beta,
                             double eps, double* y, double* save_mean, double* save_invstd,
                             double* batch_var_unbiased = nullptr, double* relu_affine = nullptr);
void batchnorm_forward_eval(int64_t rows, int64_t C, const float* x, const float* running_mean,
                            const float* running_var, const float* gamma, const float* beta, double eps, float* y,
                            bool relu = false);
void batchnorm_forward_eval(int64_t rows, int64_t C, const double* x, const double* running_mean,
                            const double* running_var, const double* gamma, const double* beta, double eps, double* y,
                            bool relu = false);
void batchnorm_backward(int64_t rows, int64_t C, const float* x, const float* dy, const float* save_mean,
                        const float* save_invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                        const float* relu_affine = nullptr);
void batchnorm_backward(int64_t rows, int64_t C, const double* x, const double* dy, const double* save_mean,
                        const double* save_invstd, const double* gamma, double* dx, double* dgamma, double* dbeta,
                        const double* relu_affine = nullptr);

void batchnorm_backward_backward(int64_t rows, int64_t C, const float* x, const float* dy, const float* save_mean,
                                 const float* save_invstd, const float* gamma, const float* relu_affine, const float* u,
                                 float* ddy, float* ddx, float* dgamma);
void batchnorm_backward_backward(int64_t rows, int64_t C, const double* x, const double* dy, const double* save_mean,
                                 const double* save_invstd, const double* gamma, const double* relu_affine,
                                 const double* u, double* ddy, double* ddx, double* dgamma);

void batchnorm_forward_train_ref(int64_t rows, int64_t C, const float* x, const float* gamma, const float* beta,
                                 double eps, float* y, float* save_mean, float* save_invstd,
                                 float* batch_var_unbiased = nullptr, float* relu_affine = nullptr);
void batchnorm_forward_train_ref(int64_t rows, int64_t C, const double* x, const double* gamma, const double* beta,
                                 double eps, double* y, double* save_mean, double* save_invstd,
                                 double* batch_var_unbiased = nullptr, double* relu_affine = nullptr);
void batchnorm_forward_eval_ref(int64_t rows, int64_t C, const float* x, const float* running_mean,
                                const float* running_var, const float* gamma, const float* beta, double eps, float* y,
                                bool relu = false);
void batchnorm_forward_eval_ref(int64_t rows, int64_t C, const double* x, const double* running_mean,
                                const double* running_var, const double* gamma, const double* beta, double eps,
                                double* y, bool relu = false);
void batchnorm_backward_ref(int64_t rows, int64_t C, const float* x, const float* dy, const float* save_mean,
                            const float* save_invstd, const float* gamma, float* dx, float* dgamma, float* dbeta,
                            const float* relu_affine = nullptr);
void batchnorm_backward_ref(int64_t rows, int64_t C, const double* x, const double* dy, const double* save_mean,
                            const double* save_invstd, const double* gamma, double* dx, double* dgamma, double* dbeta,
                            const double* relu_affine = nullptr);

void batchnorm_backward_backward_ref(int64_t rows, int64_t C, const float* x, const float* dy, const float* save_mean,
                                     const float* save_invstd, const float* gamma, const float* relu_affine,
                                     const float* u, float* ddy, float* ddx, float* dgamma);
void batchnorm_backward_backward_ref(int64_t rows, int64_t C, const double* x, const double* dy,
                                     const double* save_mean, const double* save_invstd, const double* gamma,
                                     const double* relu_affine, const double* u, double* ddy, double* ddx,
                                     double* dgamma);

void batchnorm_stats(int64_t rows, int64_t C, const float* x, double* mean, double* m2);
void batchnorm_stats(int64_t rows, int64_t C, const double* x, double* mean, double* m2);
void batchnorm_stats_ref(int64_t rows, int64_t C, const float* x, double* mean, double* m2);
void batchnorm_stats_ref(int64_t rows, int64_t C, const double* x, double* mean, double* m2);
void batchnorm_backward_sums(int64_t rows, int64_t C, const float* x, const float* dy, const float* mean,
                             double* sum_dy, double* sum_dy_dev);
void batchnorm_backward_sums(int64_t rows, int64_t C, const double* x, const double* dy, const double* mean,
                             double* sum_dy, double* sum_dy_dev);
void batchnorm_backward_sums_ref(int64_t rows, int64_t C, const float* x, const float* dy, const float* mean,
                                 double* sum_dy, double* sum_dy_dev);
void batchnorm_backward_sums_ref(int64_t rows, int64_t C, const double* x, const double* dy, const double* mean,
                                 double* sum_dy, double* sum_dy_dev);
void batchnorm_backward_dx(int64_t rows, int64_t C, const float* x, const float* dy, const float* mean,
                           const float* invstd, const float* gamma, const double* sum_dy, const double* sum_dy_dev,
                           double count, float* dx);
void batchnorm_backward_dx(int64_t rows, int64_t C, const double* x, const double* dy, const double* mean,
                           const double* invstd, const double* gamma, const double* sum_dy, const double* sum_dy_dev,
                           double count, double* dx);
void batchnorm_backward_dx_ref(int64_t rows, int64_t C, const float* x, const float* dy, const float* mean,
                               const float* invstd, const float* gamma, const double* sum_dy, const double* sum_dy_dev,
                               double count, float* dx);
void batchnorm_backward_dx_ref(int64_t rows, int64_t C, const double* x, const double* dy, const double* mean,
                               const double* invstd, const double* gamma, const double* sum_dy,
                               const double* sum_dy_dev, double count, double* dx);

void batchnorm_update_running_stats(int64_t C, double momentum, const float* batch_mean,
                                    const float* batch_var_unbiased, float* running_mean, float* running_var);
void batchnorm_update_running_stats(int64_t C, double momentum, const double* batch_mean,
                                    const double* batch_var_unbiased, double* running_mean, double* running_var);

}  // namespace lowbit::kernels
