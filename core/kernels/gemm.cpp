// GEMM entry points. float: our AVX-512 kernel (gemm_avx512.cpp) when the CPU has it, else
// OpenBLAS. double: OpenBLAS dgemm (row blocks in parallel).
#include "core/kernels/gemm.h"

#include <cblas.h>

#include <algorithm>

#include "core/kernels/gemm_pack.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

template <class T, class Acc>
void gemm_ref_impl(const GemmArgs<T>& g) {
  for (int64_t i = 0; i < g.M; ++i) {
    for (int64_t j = 0; j < g.N; ++j) {
      Acc acc = 0;
      for (int64_t k = 0; k < g.K; ++k) {
        const T a = g.trans_a ? g.A[k * g.lda + i] : g.A[i * g.lda + k];
        const T b = g.trans_b ? g.B[j * g.ldb + k] : g.B[k * g.ldb + j];
        acc += static_cast<Acc>(a) * static_cast<Acc>(b);
      }
      T& c = g.C[i * g.ldc + j];
      const Acc prev = g.beta == T(0) ? Acc(0) : static_cast<Acc>(g.beta) * static_cast<Acc>(c);
      c = static_cast<T>(static_cast<Acc>(g.alpha) * acc + prev);
    }
  }
}

CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// Fixed row blocks of C (independent of the scheduler), each an independent single-threaded GEMM.
template <class T>
void gemm_row_blocks(const GemmArgs<T>& g) {
  const int64_t work = g.M * g.N * g.K;
  const int threads = num_threads();
  if (threads <= 1 || work < (int64_t(1) << 20) || g.M < 32) {
    gemm_serial(g);
    return;
  }
  const int64_t rows_per_block = 64;
  const int64_t blocks = (g.M + rows_per_block - 1) / rows_per_block;
  parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t r0 = b * rows_per_block, r1 = std::min(g.M, r0 + rows_per_block);
      GemmArgs<T> part = g;
      part.M = r1 - r0;
      part.A = g.trans_a ? g.A + r0 : g.A + r0 * g.lda;
      part.C = g.C + r0 * g.ldc;
      gemm_serial(part);
    }
  });
}

}  // namespace

void gemm_ref(const GemmArgs<float>& g) { gemm_ref_impl<float, double>(g); }
void gemm_ref(const GemmArgs<double>& g) { gemm_ref_impl<double, long double>(g); }

void gemm_blas(const GemmArgs<float>& g) {
  if (g.M == 0 || g.N == 0) return;
  cblas_sgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N), int(g.K), g.alpha, g.A, int(g.lda), g.B,
              int(g.ldb), g.beta, g.C, int(g.ldc));
}
void gemm_blas(const GemmArgs<double>& g) {
  if (g.M == 0 || g.N == 0) return;
  cblas_dgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N), int(g.K), g.alpha, g.A, int(g.lda), g.B,
              int(g.ldb), g.beta, g.C, int(g.ldc));
}

void gemm_serial(const GemmArgs<float>& g) {
  if (detail::sgemm_avx512_supported())
    detail::sgemm_avx512(g, /*parallel=*/false);
  else
    gemm_blas(g);
}
void gemm_serial(const GemmArgs<double>& g) { gemm_blas(g); }

void gemm(const GemmArgs<float>& g) {
  if (detail::sgemm_avx512_supported())
    detail::sgemm_avx512(g, /*parallel=*/true);
  else
    gemm_row_blocks(g);
}
void gemm(const GemmArgs<double>& g) { gemm_row_blocks(g); }

}  // namespace lowbit::kernels
