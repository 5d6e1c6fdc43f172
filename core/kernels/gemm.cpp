// Provisional GEMM: OpenBLAS for the fast path. The AVX-512 micro-kernel replaces gemm/gemm_serial.
#include "core/kernels/gemm.h"

#include <cblas.h>

#include <stdexcept>

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

// Parallel over row blocks of C, each block an independent single-threaded GEMM.
template <class T>
void gemm_parallel(const GemmArgs<T>& g) {
  const int64_t flops = g.M * g.N * g.K;
  if (flops < (int64_t(1) << 18) || g.M < 32) {
    gemm_serial(g);
    return;
  }
  const int64_t rows_per_task = 64;
  parallel_for(0, g.M, rows_per_task, [&](int64_t lo, int64_t hi) {
    GemmArgs<T> part = g;
    part.M = hi - lo;
    part.A = g.trans_a ? g.A + lo : g.A + lo * g.lda;
    part.C = g.C + lo * g.ldc;
    gemm_serial(part);
  });
}

}  // namespace

void gemm_ref(const GemmArgs<float>& g) { gemm_ref_impl<float, double>(g); }
void gemm_ref(const GemmArgs<double>& g) { gemm_ref_impl<double, long double>(g); }

void gemm_blas(const GemmArgs<float>& g) {
  if (g.M == 0 || g.N == 0) return;
  cblas_sgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N), int(g.K), g.alpha, g.A,
              int(g.lda), g.B, int(g.ldb), g.beta, g.C, int(g.ldc));
}
void gemm_blas(const GemmArgs<double>& g) {
  if (g.M == 0 || g.N == 0) return;
  cblas_dgemm(CblasRowMajor, tr(g.trans_a), tr(g.trans_b), int(g.M), int(g.N), int(g.K), g.alpha, g.A,
              int(g.lda), g.B, int(g.ldb), g.beta, g.C, int(g.ldc));
}

void gemm_serial(const GemmArgs<float>& g) { gemm_blas(g); }
void gemm_serial(const GemmArgs<double>& g) { gemm_blas(g); }
void gemm(const GemmArgs<float>& g) { gemm_parallel(g); }
void gemm(const GemmArgs<double>& g) { gemm_parallel(g); }

}  // namespace lowbit::kernels
