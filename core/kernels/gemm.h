// GEMM kernels: C = alpha * op(A) * op(B) + beta * C, all matrices row-major.
//
// Shapes: op(A) is M x K, op(B) is K x N, C is M x N. op(X) = X or X^T (trans_a / trans_b).
// Leading dimensions are row strides in elements (lda >= K if !trans_a else >= M, etc.).
// beta == 0 means C is overwritten (its previous content, even NaN, is ignored).
//
//   gemm         fast path, parallel over lowbit's threads (parallel_for) when large enough.
//   gemm_serial  fast path, single-threaded: call it from inside a parallel region.
//   gemm_ref     the plain triple loop (double accumulation for float): the twin every fast
//                path is pinned to by tests/test_kernels_gemm.cpp.
//   gemm_blas    OpenBLAS cblas_?gemm, single-threaded: reference point and fallback.
#pragma once

#include <cstdint>

namespace lowbit::kernels {

template <class T>
struct GemmArgs {
  bool trans_a = false;
  bool trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  T alpha = T(1);
  const T* A = nullptr;
  int64_t lda = 0;
  const T* B = nullptr;
  int64_t ldb = 0;
  T beta = T(0);
  T* C = nullptr;
  int64_t ldc = 0;
};

void gemm(const GemmArgs<float>& g);
void gemm(const GemmArgs<double>& g);
void gemm_serial(const GemmArgs<float>& g);
void gemm_serial(const GemmArgs<double>& g);
void gemm_ref(const GemmArgs<float>& g);
void gemm_ref(const GemmArgs<double>& g);
void gemm_blas(const GemmArgs<float>& g);
void gemm_blas(const GemmArgs<double>& g);

}  // namespace lowbit::kernels
