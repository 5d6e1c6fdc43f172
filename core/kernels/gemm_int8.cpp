// Integer GEMM u8 x s8 -> s32 (contract: core/kernels/gemm_int8.h).
//
// Blocking: rows of A in blocks of MC rows, K in blocks of KC (a multiple of 4), then for each
// packed panel of B (nr <= 64 columns) the micro-kernel runs over at most MR rows at a time (blocks
// of nearly equal heights) with MR x nr int32 accumulators in registers. The VNNI micro-kernel keeps
// MR x NV zmm accumulators (NV = nr/16 vectors; MR = 12/12/8/6 for NV = 1/2/3/4, measured on Zen 4:
// 24 rows for NV = 1 spilled and ran at half the rate) and, per quad of k, broadcasts 4 bytes of
// each A row against NV vectors of B. The last panel runs with as many vectors as it has columns.
// A K % 4 tail is multiplied from a zero-padded copy, so the kernels read whole quads only.
#include "core/kernels/gemm_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/kernels/cpu.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

constexpr int kMaxMR = 12;
constexpr int kMRForNV[5] = {0, 12, 12, 8, 6};
constexpr int kPortableMR = 4;

// K block (in k, a multiple of 4): a KC x nr panel of B of at most 32 KiB.
int64_t k_block(int64_t nr) { return std::max<int64_t>(4, (32768 / nr) / 4 * 4); }

// Rows per M block: an MC x KC block of A of at most ~128 KiB (whole MR row groups).
int64_t m_block(int64_t kc, int64_t mr) { return std::max<int64_t>(mr, (131072 / std::max<int64_t>(kc, 1)) / mr * mr); }

inline uint32_t load_quad(const uint8_t* a) {
  uint32_t v;
  std::memcpy(&v, a, 4);
  return v;
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI micro-kernel
// ---------------------------------------------------------------------------------------------

// C[0:MR, 0:n] (+)= A[0:MR, :] * Bpanel[:, 0:n] over nseg segments of K, each seg_quads quads long:
// segment g of row i is the 4 * seg_quads bytes at a + i * lda + g * seg_stride. `b` points at the
// first quad of the panel; consecutive quads are `bstride` bytes apart (nr * 4) and run on across
// segments. n in ((NV-1)*16, NV*16].
template <int MR, int NV>
LOWBIT_AVX512_VNNI void kernel_vnni(int64_t nseg, int64_t seg_quads, int64_t seg_stride, const uint8_t* __restrict a,
                                    int64_t lda, const int8_t* __restrict b, int64_t bstride, int32_t* __restrict c,
                                    int64_t ldc, int n, bool accumulate) {
  __m512i acc[MR][NV];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_si512();

  for (int64_t g = 0; g < nseg; ++g) {
    const uint8_t* as = a + g * seg_stride;
    for (int64_t q = 0; q < seg_quads; ++q, as += 4, b += bstride) {
      __m512i bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(b + v * 64);
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        const __m512i av = _mm512_set1_epi32(int(load_quad(as + i * lda)));
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], av, bv[v]);
      }
    }
  }

  __mmask16 mask[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int cols = std::min(16, n - v * 16);
    mask[v] = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1u);
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      int32_t* cp = c + i * ldc + v * 16;
      __m512i r = acc[i][v];
      if (accumulate) r = _mm512_add_epi32(r, _mm512_maskz_loadu_epi32(mask[v], cp));
      _mm512_mask_storeu_epi32(cp, mask[v], r);
    }
}

using KernelFn = void (*)(int64_t, int64_t, int64_t, const uint8_t*, int64_t, const int8_t*, int64_t, int32_t*, int64_t,
                          int, bool);

template <int NV, int... Ms>
constexpr std::array<KernelFn, kMaxMR> vnni_row(std::integer_sequence<int, Ms...>) {
  return {&kernel_vnni<Ms + 1, NV>...};
}

// kVnni[NV - 1][MR - 1], MR <= kMRForNV[NV].
const std::array<std::array<KernelFn, kMaxMR>, 4> kVnni = {
    vnni_row<1>(std::make_integer_sequence<int, kMRForNV[1]>{}),
    vnni_row<2>(std::make_integer_sequence<int, kMRForNV[2]>{}),
    vnni_row<3>(std::make_integer_sequence<int, kMRForNV[3]>{}),
    vnni_row<4>(std::make_integer_sequence<int, kMRForNV[4]>{}),
};

// ---------------------------------------------------------------------------------------------
// Portable micro-kernel: the same contract for `rows` <= kPortableMR rows, plain C++. Sums in
// uint32 (exact modulo 2^32, so an overflowing result wraps like the vector path instead of being
// undefined behaviour).
// ---------------------------------------------------------------------------------------------

// W = the panel's columns rounded up to 16 (a constant trip count the compiler vectorizes; B is zero
// past n, and only n columns are stored).
template <int W>
void kernel_portable(int rows, int64_t nseg, int64_t seg_quads, int64_t seg_stride, const uint8_t* __restrict a,
                     int64_t lda, const int8_t* __restrict b, int64_t bstride, int32_t* __restrict c, int64_t ldc,
                     int n, bool accumulate) {
  uint32_t acc[kPortableMR][W] = {};
  for (int64_t g = 0; g < nseg; ++g) {
    const uint8_t* as = a + g * seg_stride;
    for (int64_t q = 0; q < seg_quads; ++q, as += 4, b += bstride) {
      for (int i = 0; i < rows; ++i) {
        const uint8_t* ap = as + i * lda;
        const int32_t a0 = ap[0], a1 = ap[1], a2 = ap[2], a3 = ap[3];
        uint32_t* acc_i = acc[i];
        for (int j = 0; j < W; ++j)
          acc_i[j] += uint32_t(a0 * b[4 * j] + a1 * b[4 * j + 1] + a2 * b[4 * j + 2] + a3 * b[4 * j + 3]);
      }
    }
  }
  for (int i = 0; i < rows; ++i) {
    int32_t* cp = c + i * ldc;
    for (int j = 0; j < n; ++j) {
      const uint32_t old = accumulate ? uint32_t(cp[j]) : 0u;
      cp[j] = int32_t(old + acc[i][j]);
    }
  }
}

using PortableFn = void (*)(int, int64_t, int64_t, int64_t, const uint8_t*, int64_t, const int8_t*, int64_t, int32_t*,
                            int64_t, int, bool);
constexpr PortableFn kPortable[4] = {&kernel_portable<16>, &kernel_portable<32>, &kernel_portable<48>,
                                     &kernel_portable<64>};

// ---------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------

int64_t micro_rows(bool vnni, int64_t nr) { return vnni ? kMRForNV[nr / 16] : kPortableMR; }

// The micro-kernel on rows [0, rows) of A (at `a`, rows lda apart) against one panel, in blocks of
// at most mr rows of nearly equal heights.
void run_rows(bool vnni, int64_t mr, int64_t rows, int64_t nseg, int64_t seg_quads, int64_t seg_stride,
              const uint8_t* a, int64_t lda, const int8_t* b, int64_t bstride, int32_t* c, int64_t ldc, int n,
              bool accumulate) {
  const int64_t blocks = (rows + mr - 1) / mr;
  const int nv = (n + 15) / 16;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = rows * blk / blocks, m = rows * (blk + 1) / blocks - i0;
    if (vnni)
      kVnni[size_t(nv - 1)][size_t(m - 1)](nseg, seg_quads, seg_stride, a + i0 * lda, lda, b, bstride, c + i0 * ldc,
                                           ldc, n, accumulate);
    else
      kPortable[nv - 1](int(m), nseg, seg_quads, seg_stride, a + i0 * lda, lda, b, bstride, c + i0 * ldc, ldc, n,
                        accumulate);
  }
}

void zero_block(const GemmU8S8Args& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  for (int64_t i = i0; i < i1; ++i) std::fill(g.C + i * g.ldc + j0, g.C + i * g.ldc + j1, 0);
}

// This thread's buffer for the K tail of a block of A rows (4 bytes per row).
uint8_t* tail_scratch(int64_t rows) {
  thread_local std::vector<uint8_t> buf;
  if (int64_t(buf.size()) < rows * 4) buf.resize(size_t(rows * 4));
  return buf.data();
}

// Rows [i0, i1) of C against panels [p0, p1) of B. K runs in blocks of whole quads; a K % 4 tail
// is copied, zero-padded, to a small buffer (A is not readable past K in general).
void gemm_block(const GemmU8S8Args& g, int64_t i0, int64_t i1, int64_t p0, int64_t p1, bool vnni) {
  const PackedS8& B = *g.B;
  const int64_t K = B.K, N = B.N, nr = B.nr, kp = B.k_padded;
  if (i0 >= i1 || p0 >= p1) return;
  if (K == 0) {
    if (!g.accumulate) zero_block(g, i0, i1, p0 * nr, std::min(N, p1 * nr));
    return;
  }
  const int64_t mr = micro_rows(vnni, nr);
  const int64_t kfull = K / 4 * 4, tail = K % 4;
  const int64_t kc_step = k_block(nr);
  const int64_t mc = m_block(std::min(kc_step, K), mr);
  for (int64_t ib = i0; ib < i1; ib += mc) {
    const int64_t rows = std::min(i1, ib + mc) - ib;
    for (int64_t k0 = 0; k0 < kfull; k0 += kc_step) {
      const int64_t kc = std::min(kc_step, kfull - k0);
      for (int64_t p = p0; p < p1; ++p)
        run_rows(vnni, mr, rows, 1, kc / 4, 0, g.A + ib * g.lda + k0, g.lda, B.data.data() + p * kp * nr + k0 * nr,
                 nr * 4, g.C + ib * g.ldc + p * nr, g.ldc, int(std::min(nr, N - p * nr)), g.accumulate || k0 > 0);
    }
    if (tail) {
      uint8_t* t = tail_scratch(rows);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < 4; ++j) t[i * 4 + j] = j < tail ? g.A[(ib + i) * g.lda + kfull + j] : 0;
      for (int64_t p = p0; p < p1; ++p)
        run_rows(vnni, mr, rows, 1, 1, 0, t, 4, B.data.data() + p * kp * nr + kfull * nr, nr * 4,
                 g.C + ib * g.ldc + p * nr, g.ldc, int(std::min(nr, N - p * nr)), g.accumulate || kfull > 0);
    }
  }
}

void check_args(const GemmU8S8Args& g, const char* op) {
  LOWBIT_CHECK(g.B != nullptr, op, ": B is not packed");
  LOWBIT_CHECK(g.M >= 0 && g.lda >= g.B->K && g.ldc >= g.B->N, op, ": bad shape M=", g.M, " lda=", g.lda,
               " ldc=", g.ldc, " for K=", g.B->K, " N=", g.B->N);
  LOWBIT_CHECK(int64_t(g.B->data.size()) == g.B->panels() * g.B->k_padded * g.B->nr, op,
               ": packed B has the wrong size");
}

}  // namespace

bool int8_vnni_enabled() { return cpu_has_avx512_vnni() && avx512_enabled(); }

PackedS8 pack_b_s8(int64_t K, int64_t N, const int8_t* B, int64_t ldb, bool trans_b) {
  LOWBIT_CHECK(K >= 0 && N >= 0 && ldb >= (trans_b ? K : N), "pack_b_s8: bad shape K=", K, " N=", N, " ldb=", ldb);
  PackedS8 p;
  p.K = K;
  p.N = N;
  p.k_padded = (K + 3) / 4 * 4;
  p.nr = std::clamp<int64_t>((N + 15) / 16 * 16, 16, 64);
  p.data.assign(size_t(p.panels() * p.k_padded * p.nr), 0);
  p.column_sums.assign(size_t(N), 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) {
      const int8_t v = trans_b ? B[j * ldb + k] : B[k * ldb + j];
      const int64_t panel = j / p.nr, jj = j % p.nr;
      p.data[size_t(panel * p.k_padded * p.nr + (k / 4) * p.nr * 4 + jj * 4 + k % 4)] = v;
      p.column_sums[size_t(j)] += v;
    }
  return p;
}

void gemm_u8s8s32_serial(const GemmU8S8Args& g) {
  check_args(g, "gemm_u8s8s32_serial");
  gemm_block(g, 0, g.M, 0, g.B->panels(), int8_vnni_enabled());
}

void gemm_u8s8s32(const GemmU8S8Args& g) {
  check_args(g, "gemm_u8s8s32");
  const bool vnni = int8_vnni_enabled();
  const int64_t panels = g.B->panels();
  if (g.M == 0 || panels == 0) return;
  // Tasks from the shape alone: about 32 row blocks of whole MR groups, and column groups when
  // there are fewer than 8 row blocks.
  const int64_t mr = micro_rows(vnni, g.B->nr);
  const int64_t mgroups = (g.M + mr - 1) / mr;
  const int64_t mb = mr * ((mgroups + 31) / 32);
  const int64_t mtasks = (g.M + mb - 1) / mb;
  const int64_t ngroups = mtasks < 8 ? std::min(panels, (8 + mtasks - 1) / mtasks) : 1;
  const int64_t work = g.M * g.B->N * std::max<int64_t>(g.B->K, 1);
  if (work < (int64_t(1) << 16)) {
    gemm_block(g, 0, g.M, 0, panels, vnni);
    return;
  }
  parallel_for(0, mtasks * ngroups, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t mt = t / ngroups, ng = t % ngroups;
      const int64_t i0 = mt * mb, i1 = std::min(g.M, i0 + mb);
      gemm_block(g, i0, i1, panels * ng / ngroups, panels * (ng + 1) / ngroups, vnni);
    }
  });
}

namespace detail {

void gemm_u8s8s32_segmented(const SegmentedA& a, const PackedS8& B, int32_t* C, int64_t ldc) {
  LOWBIT_CHECK(a.seg_len % 4 == 0 && a.nseg * a.seg_len == B.k_padded && ldc >= B.N, "gemm_u8s8s32_segmented: ", a.nseg,
               " segments of ", a.seg_len, " bytes for a packed K of ", B.k_padded);
  if (a.rows <= 0) return;
  const bool vnni = int8_vnni_enabled();
  const int64_t mr = micro_rows(vnni, B.nr);
  for (int64_t p = 0; p < B.panels(); ++p)
    run_rows(vnni, mr, a.rows, a.nseg, a.seg_len / 4, a.seg_stride, a.a, a.lda, B.data.data() + p * B.k_padded * B.nr,
             B.nr * 4, C + p * B.nr, ldc, int(std::min(B.nr, B.N - p * B.nr)), false);
}

}  // namespace detail

void gemm_u8s8s32_ref(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb,
                      bool trans_b, int32_t* C, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      int64_t s = accumulate ? C[i * ldc + j] : 0;
      for (int64_t k = 0; k < K; ++k) s += int64_t(A[i * lda + k]) * int64_t(trans_b ? B[j * ldb + k] : B[k * ldb + j]);
      LOWBIT_CHECK(s >= INT32_MIN && s <= INT32_MAX, "gemm_u8s8s32_ref: C(", i, ",", j, ") = ", s,
                   " does not fit int32");
      C[i * ldc + j] = int32_t(s);
    }
}

}  // namespace lowbit::kernels
