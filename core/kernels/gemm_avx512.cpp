// AVX-512 float GEMM (see gemm_pack.h). Every function that uses AVX-512 carries the target
// attribute, so this file builds and dispatches correctly without -march=native.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "core/kernels/cpu.h"
#include "core/kernels/gemm_pack.h"
#include "core/parallel.h"

namespace lowbit::kernels::detail {
namespace {

// Register block: kMR rows x kNR columns of C live in 28 zmm accumulators.
constexpr int kMR = 14;
constexpr int kNR = 32;
// Cache blocks. A KC x NR panel of B (32 KiB) stays in L1 while MR x KC panels of A stream from
// an MC x KC block in L2; the KC x NC block of B sits in L2/L3.
constexpr int64_t kKCMax = 512;
constexpr int64_t kNC = 512;
constexpr int64_t kNCOuter = 4096;
constexpr int64_t kMCOuter = 1024;
constexpr int64_t kPackAMinN = 64;
constexpr int64_t kPackedBBudget = int64_t(16) << 20;
constexpr int64_t kBlocksPerThread = 4;

// K is cut into equal blocks of at most kKCMax: the block size depends on K alone, which keeps the
// per-element summation order independent of how C is split between threads.
int64_t k_block(int64_t K) {
  const int64_t blocks = (K + kKCMax - 1) / kKCMax;
  return (K + blocks - 1) / blocks;
}

// 64-byte aligned growable scratch.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(data_); }
  float* get(int64_t n) {
    if (n > cap_) {
      std::free(data_);
      const int64_t bytes = ((n * int64_t(sizeof(float)) + 63) / 64) * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, size_t(bytes)));
      if (!data_) throw std::bad_alloc();
      cap_ = n;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  int64_t cap_ = 0;
};

// Scratch for packed A (one per thread) and for packed B in the serial path. Used only between
// calls that cannot be interleaved with other GEMM work on the same thread (no nested parallelism
// happens while they are live). The parallel path's shared B buffer is allocated per call.
Scratch& a_scratch() {
  static thread_local Scratch s;
  return s;
}
Scratch& b_scratch() {
  static thread_local Scratch s;
  return s;
}

// Shared packed-B buffer of a parallel call, cached per calling thread. A nested parallel GEMM
// started on the same thread while the outer one waits (TBB work stealing) finds it busy and
// allocates its own.
class SharedB {
 public:
  explicit SharedB(int64_t n) {
    static thread_local Scratch cached;
    static thread_local bool busy = false;
    if (!busy) {
      busy_ = &busy;
      busy = true;
      data_ = cached.get(n);
    } else {
      data_ = own_.get(n);
    }
  }
  SharedB(const SharedB&) = delete;
  SharedB& operator=(const SharedB&) = delete;
  ~SharedB() {
    if (busy_) *busy_ = false;
  }
  float* data() const { return data_; }

 private:
  Scratch own_;
  bool* busy_ = nullptr;
  float* data_ = nullptr;
};

// Where the micro-kernel reads A: op(A)(i, k) is at
//   packed: a[k*M + i]   (packed panel, M = panel height)
//   rows:   a[i*lda + k] (A in place, not transposed)
//   cols:   a[k*lda + i] (A in place, transposed)
enum class AMode { packed = 0, rows = 1, cols = 2 };

// C[0:M, 0:n] = alpha * sum_k op(A)(i,k) * Bp(k,j) + beta * C   (beta == 0: C is not read).
// Bp is a packed panel with NV*16 floats per k. n <= NV*16; columns past n are not touched.
template <int M, int NV, AMode MODE>
LOWBIT_AVX512 void micro_kernel(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b,
                                float* __restrict c, int64_t ldc, int n, float alpha, float beta) {
  __m512 acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    if (NV == 2) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  }

  const float* b_next = b + kc * (NV * 16);
  for (int64_t k = 0; k < kc; ++k) {
    // Pull the same row of the next B panel (it follows this one in the packed block) into L2,
    // so a cold B chunk is streamed in while this panel computes.
    _mm_prefetch(reinterpret_cast<const char*>(b_next + k * (NV * 16)), _MM_HINT_T1);
    if (NV == 2) _mm_prefetch(reinterpret_cast<const char*>(b_next + k * (NV * 16) + 16), _MM_HINT_T1);
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + k * (NV * 16) + v * 16);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      float av;
      if constexpr (MODE == AMode::packed)
        av = a[k * M + i];
      else if constexpr (MODE == AMode::rows)
        av = a[i * lda + k];
      else
        av = a[k * lda + i];
      const __m512 ab = _mm512_set1_ps(av);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ab, bv[v], acc[i][v]);
    }
  }

  const int tail = n - (NV - 1) * 16;
  const __mmask16 last = tail >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << tail) - 1);
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_ps(c + i * ldc + v * 16, v == NV - 1 ? last : __mmask16(0xFFFF),
                              _mm512_mul_ps(acc[i][v], va));
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __mmask16 mask = v == NV - 1 ? last : __mmask16(0xFFFF);
        float* cp = c + i * ldc + v * 16;
        const __m512 old = _mm512_maskz_loadu_ps(mask, cp);
        _mm512_mask_storeu_ps(cp, mask, _mm512_fmadd_ps(acc[i][v], va, _mm512_mul_ps(old, vb)));
      }
  }
}

using KernelFn = void (*)(int64_t, const float*, int64_t, const float*, float*, int64_t, int, float, float);

template <AMode MODE, int NV, int... Ms>
constexpr auto kernel_row(std::integer_sequence<int, Ms...>) {
  return std::array<KernelFn, sizeof...(Ms)>{&micro_kernel<Ms + 1, NV, MODE>...};
}

// kKernels[mode][NV - 1][M - 1]
template <AMode MODE>
constexpr std::array<std::array<KernelFn, kMR>, 2> kernels_for_mode() {
  return {kernel_row<MODE, 1>(std::make_integer_sequence<int, kMR>{}),
          kernel_row<MODE, 2>(std::make_integer_sequence<int, kMR>{})};
}
constexpr std::array<std::array<std::array<KernelFn, kMR>, 2>, 3> kKernels = {
    kernels_for_mode<AMode::packed>(), kernels_for_mode<AMode::rows>(), kernels_for_mode<AMode::cols>()};

// In-register 16x16 transpose: r[i] lane j  ->  r[j] lane i. (The all-ones maskz forms sidestep a
// GCC 12 -Wmaybe-uninitialized false positive in the unmasked intrinsics; same instructions.)
LOWBIT_AVX512 inline void transpose16(__m512 r[16]) {
  constexpr __mmask16 all = 0xFFFF;
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_maskz_unpacklo_ps(all, r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_maskz_unpackhi_ps(all, r[2 * i], r[2 * i + 1]);
  }
  __m512 u[16];
  for (int i = 0; i < 4; ++i) {
    const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i + 0] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, t0, t2));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, t0, t2));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, t1, t3));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, t1, t3));
  }
  // u[4i + j], 128-bit lane L, holds rows 4i..4i+3 of column 4L + j.
  for (int j = 0; j < 4; ++j) {
    const __m512 v0 = _mm512_maskz_shuffle_f32x4(all, u[j], u[4 + j], 0x88);
    const __m512 v1 = _mm512_maskz_shuffle_f32x4(all, u[j], u[4 + j], 0xDD);
    const __m512 w0 = _mm512_maskz_shuffle_f32x4(all, u[8 + j], u[12 + j], 0x88);
    const __m512 w1 = _mm512_maskz_shuffle_f32x4(all, u[8 + j], u[12 + j], 0xDD);
    r[j] = _mm512_maskz_shuffle_f32x4(all, v0, w0, 0x88);
    r[4 + j] = _mm512_maskz_shuffle_f32x4(all, v1, w1, 0x88);
    r[8 + j] = _mm512_maskz_shuffle_f32x4(all, v0, w0, 0xDD);
    r[12 + j] = _mm512_maskz_shuffle_f32x4(all, v1, w1, 0xDD);
  }
}

__mmask16 low_mask(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// dst[k*dst_stride + r] = src[r*src_stride + k] for r < rows (<= 16), k < cols.
LOWBIT_AVX512 void transpose_copy(const float* src, int64_t src_stride, int rows, int64_t cols, float* dst,
                                  int64_t dst_stride) {
  const __mmask16 row_mask = low_mask(rows);
  for (int64_t k0 = 0; k0 < cols; k0 += 16) {
    const int64_t kn = std::min<int64_t>(16, cols - k0);
    const __mmask16 col_mask = low_mask(kn);
    __m512 r[16];
    for (int i = 0; i < 16; ++i)
      r[i] = i < rows ? _mm512_maskz_loadu_ps(col_mask, src + i * src_stride + k0) : _mm512_setzero_ps();
    transpose16(r);
    for (int64_t k = 0; k < kn; ++k) _mm512_mask_storeu_ps(dst + (k0 + k) * dst_stride, row_mask, r[k]);
  }
}

// Packs op(B)[pc:pc+kc, j0:j0+n] (n <= kNR) as one panel of kc rows of w floats (w = 32, or 16 when
// n <= 16), zero-padded past n.
LOWBIT_AVX512 void pack_b_panel(const GemmArgs<float>& g, int64_t pc, int64_t kc, int64_t j0, int64_t n, float* out) {
  const int w = n > 16 ? 32 : 16;
  if (!g.trans_b) {
    const float* src = g.B + pc * g.ldb + j0;
    const __mmask16 m0 = low_mask(n);
    const __mmask16 m1 = n > 16 ? low_mask(n - 16) : 0;
    for (int64_t k = 0; k < kc; ++k) {
      const float* s = src + k * g.ldb;
      _mm512_store_ps(out + k * w, _mm512_maskz_loadu_ps(m0, s));
      if (w == 32) _mm512_store_ps(out + k * w + 16, _mm512_maskz_loadu_ps(m1, s + 16));
    }
    return;
  }
  // op(B)(k, j) = B[j*ldb + k]: transpose 16 rows of B at a time; padding columns become zeros.
  for (int64_t jj = 0; jj < w; jj += 16) {
    const int rows = int(std::clamp<int64_t>(n - jj, 0, 16));
    if (rows == 0) {
      for (int64_t k = 0; k < kc; ++k) _mm512_store_ps(out + k * w + jj, _mm512_setzero_ps());
      continue;
    }
    // Store all 16 lanes (the transposed zero rows are the padding).
    const float* src = g.B + (j0 + jj) * g.ldb + pc;
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int64_t kn = std::min<int64_t>(16, kc - k0);
      const __mmask16 col_mask = low_mask(kn);
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(col_mask, src + i * g.ldb + k0) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t k = 0; k < kn; ++k) _mm512_store_ps(out + (k0 + k) * w + jj, r[k]);
    }
  }
}

void pack_b(const GemmArgs<float>& g, int64_t pc, int64_t kc, int64_t jc, int64_t nc, float* out, int64_t p_begin,
            int64_t p_end) {
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t j0 = p * kNR;
    pack_b_panel(g, pc, kc, jc + j0, std::min<int64_t>(kNR, nc - j0), out + p * kc * kNR);
  }
}

// Packs op(A)[i0:i0+m, pc:pc+kc] (m <= kMR) as kc groups of m floats.
LOWBIT_AVX512 void pack_a_panel(const GemmArgs<float>& g, int64_t i0, int m, int64_t pc, int64_t kc, float* out) {
  if (g.trans_a) {
    const float* src = g.A + pc * g.lda + i0;
    const __mmask16 mask = low_mask(m);
    for (int64_t k = 0; k < kc; ++k)
      _mm512_mask_storeu_ps(out + k * m, mask, _mm512_maskz_loadu_ps(mask, src + k * g.lda));
  } else {
    transpose_copy(g.A + i0 * g.lda + pc, g.lda, m, kc, out, m);
  }
}

// Whether to pack A. Reading A in place costs nothing up front; packing pays off when each A
// panel is reused across several B panels.
bool want_pack_a(const GemmArgs<float>& g) { return g.N > kPackAMinN; }

// Rows [i_begin, i_end) of C against B panels [p_begin, p_end) of the block packed at (pc, jo).
// A is packed kMCOuter rows at a time; each MR x KC panel of it stays in L1 while a KC x NC chunk
// of B (in L2) streams past it.
void row_block(const GemmArgs<float>& g, bool pack, int64_t i_begin, int64_t i_end, int64_t pc, int64_t kc, int64_t jo,
               int64_t no, const float* bp, int64_t p_begin, int64_t p_end) {
  const float beta = pc == 0 ? g.beta : 1.0f;
  const AMode mode = pack ? AMode::packed : g.trans_a ? AMode::cols : AMode::rows;
  const int64_t chunk_panels = std::max<int64_t>(1, kNC / kNR);
  for (int64_t i0 = i_begin; i0 < i_end; i0 += kMCOuter) {
    const int64_t i1 = std::min(i_end, i0 + kMCOuter);
    float* abuf = nullptr;
    if (pack) {
      abuf = a_scratch().get((i1 - i0 + kMR) * kc);
      for (int64_t i = i0; i < i1; i += kMR)
        pack_a_panel(g, i, int(std::min<int64_t>(kMR, i1 - i)), pc, kc, abuf + (i - i0) * kc);
    }
    for (int64_t p0 = p_begin; p0 < p_end; p0 += chunk_panels) {
      const int64_t p1 = std::min(p_end, p0 + chunk_panels);
      for (int64_t i = i0; i < i1; i += kMR) {
        const int m = int(std::min<int64_t>(kMR, i1 - i));
        const float* a = mode == AMode::packed ? abuf + (i - i0) * kc
                         : mode == AMode::rows ? g.A + i * g.lda + pc
                                               : g.A + pc * g.lda + i;
        const KernelFn kern32 = kKernels[int(mode)][1][m - 1];
        const KernelFn kern16 = kKernels[int(mode)][0][m - 1];
        float* crow = g.C + i * g.ldc + jo;
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t jr = p * kNR;
          const int n = int(std::min<int64_t>(kNR, no - jr));
          (n > 16 ? kern32 : kern16)(kc, a, g.lda, bp + p * kc * kNR, crow + jr, g.ldc, n, g.alpha, beta);
        }
      }
    }
  }
}

void scale_c(const GemmArgs<float>& g, int64_t r0, int64_t r1) {
  for (int64_t i = r0; i < r1; ++i) {
    float* c = g.C + i * g.ldc;
    if (g.beta == 0.0f)
      std::fill(c, c + g.N, 0.0f);
    else
      for (int64_t j = 0; j < g.N; ++j) c[j] *= g.beta;
  }
}

void sgemm_serial_impl(const GemmArgs<float>& g) {
  const int64_t kc_step = k_block(g.K);
  const bool pack = want_pack_a(g);
  for (int64_t jo = 0; jo < g.N; jo += kNCOuter) {
    const int64_t no = std::min(kNCOuter, g.N - jo);
    const int64_t panels = (no + kNR - 1) / kNR;
    for (int64_t pc = 0; pc < g.K; pc += kc_step) {
      const int64_t kc = std::min(kc_step, g.K - pc);
      float* bp = b_scratch().get(panels * kNR * kc);
      pack_b(g, pc, kc, jo, no, bp, 0, panels);
      row_block(g, pack, 0, g.M, pc, kc, jo, no, bp, 0, panels);
    }
  }
}

// Two fork/joins per column slab: pack B (all K blocks of the slab), then row blocks of C, each
// running through every K block on its own.
void sgemm_parallel_impl(const GemmArgs<float>& g, int threads) {
  const int64_t kc_step = k_block(g.K);
  const bool pack = want_pack_a(g);
  // Column slab: as wide as the packed-B budget allows for the whole K.
  const int64_t slab =
      std::clamp<int64_t>(kPackedBBudget / std::max<int64_t>(g.K, 1) / kNR * kNR, kNR, ((g.N + kNR - 1) / kNR) * kNR);
  const int64_t panels_max = slab / kNR;
  SharedB bbuf(panels_max * kNR * g.K);
  float* bp = bbuf.data();
  const int64_t kblocks = (g.K + kc_step - 1) / kc_step;

  // Row blocks of whole MR panels, spread evenly, a few per thread for load balance; column
  // groups too when there are too few row blocks to keep every thread busy.
  const int64_t want = int64_t(threads) * kBlocksPerThread;
  const int64_t mpanels = (g.M + kMR - 1) / kMR;
  const int64_t mblocks = std::min(mpanels, want);
  for (int64_t jo = 0; jo < g.N; jo += slab) {
    const int64_t no = std::min(slab, g.N - jo);
    const int64_t panels = (no + kNR - 1) / kNR;
    // The K block starting at pc is packed at bp + pc * panels * kNR.
    const int64_t pack_groups = std::min<int64_t>(panels, 4);
    parallel_for(0, kblocks * pack_groups, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t pc = (t / pack_groups) * kc_step, grp = t % pack_groups;
        const int64_t kc = std::min(kc_step, g.K - pc);
        pack_b(g, pc, kc, jo, no, bp + pc * panels * kNR, panels * grp / pack_groups, panels * (grp + 1) / pack_groups);
      }
    });
    const int64_t ngroups = std::min(panels, (want + mblocks - 1) / mblocks);
    parallel_for(0, mblocks * ngroups, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t mb = t / ngroups, ng = t % ngroups;
        const int64_t i0 = mpanels * mb / mblocks * kMR;
        const int64_t i1 = std::min(g.M, mpanels * (mb + 1) / mblocks * kMR);
        const int64_t p0 = panels * ng / ngroups, p1 = panels * (ng + 1) / ngroups;
        for (int64_t pc = 0; pc < g.K; pc += kc_step)
          row_block(g, pack, i0, i1, pc, std::min(kc_step, g.K - pc), jo, no, bp + pc * panels * kNR, p0, p1);
      }
    });
  }
}

}  // namespace

bool sgemm_avx512_supported() { return cpu_has_avx512(); }

void sgemm_avx512(const GemmArgs<float>& g, bool parallel) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 || g.alpha == 0.0f) {
    if (parallel)
      parallel_for(0, g.M, 64, [&](int64_t lo, int64_t hi) { scale_c(g, lo, hi); });
    else
      scale_c(g, 0, g.M);
    return;
  }
  const int threads = parallel ? num_threads() : 1;
  // Below ~2 MFLOP the fork/join costs more than it saves.
  if (threads <= 1 || g.M * g.N * g.K < (int64_t(1) << 20))
    sgemm_serial_impl(g);
  else
    sgemm_parallel_impl(g, threads);
}

}  // namespace lowbit::kernels::detail
