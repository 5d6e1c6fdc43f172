// Winograd F(m x m, 3x3), m = 2 or 4, AVX-512, NHWC / KRSC (contract: core/kernels/conv_winograd.h).
//
// A tile of m x m outputs reads an alpha x alpha input tile (alpha = m + 2) and is
//     Y = A^T [ (G w G^T) (.) (B^T d B) ] A,
// i.e. alpha^2 products per output channel and input channel instead of 9 m^2 (Lavin & Gray 2016):
//   F(2x2, 3x3): 16 for 4 outputs (2.25x fewer multiplies), F(4x4, 3x3): 36 for 16 (4x fewer).
// Matrices (the transforms below are these, written out):
//   F(2x2, 3x3)  B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//                G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//                A^T = [1 1 1 0; 0 1 -1 -1]
//   F(4x4, 3x3)  B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//                       0 4 0 -5 0 1]
//                G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//                A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
// Work is done in blocks of tb tiles (flattened over images, tile rows, tile columns): the input
// transform writes V[xi][t][c] (channels in the 16 lanes, as NHWC gives them), alpha^2 small GEMMs
// M[xi][t][k] = sum_c V[xi][t][c] U[xi][c][k] run from per-thread buffers sized to stay in cache,
// and the output transform writes the m x m outputs of each tile. Backward-weight transforms dy
// with A (dM = A dY A^T), accumulates dU[xi][c][k] = sum_t V[xi][t][c] dM[xi][t][k] per batch chunk
// and maps dU back with G^T dU G.
#include "core/kernels/conv_winograd.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/kernels/cpu.h"
#include "core/kernels/gemm.h"
#include "core/kernels/scratch.h"
#include "core/parallel.h"

#define LOWBIT_WINO_INLINE LOWBIT_AVX512 static inline __attribute__((always_inline))

namespace lowbit::kernels {
namespace {

constexpr int64_t kMaxChannels = 512;
alignas(64) const float kZeros[kMaxChannels] = {};

// Floats between two transform points' panels (V, M, dM): a block's tb x channels plus one cache
// line, so the alpha^2 stores of a tile do not land at the same offset modulo 4 KiB as the loads
// that follow them (4K aliasing stalls the loads until the stores retire).
int64_t panel(int64_t tb, int64_t channels) { return tb * channels + 16; }

// ------------------------------------------------------------------------------------------------
// The two tile sizes: G for the scalar kernel transforms; 1-D transforms on vectors of 16 channels.
// ------------------------------------------------------------------------------------------------

template <int M>
struct Wino;

template <>
struct Wino<2> {
  static constexpr int kA = 4;  // F(2x2, 3x3): 2x2 outputs from 4x4 inputs
  static constexpr float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  // t = B^T d
  LOWBIT_WINO_INLINE void input_1d(const __m512 (&d)[4], __m512 (&t)[4]) {
    t[0] = _mm512_sub_ps(d[0], d[2]);
    t[1] = _mm512_add_ps(d[1], d[2]);
    t[2] = _mm512_sub_ps(d[2], d[1]);
    t[3] = _mm512_sub_ps(d[1], d[3]);
  }
  // y = A^T m
  LOWBIT_WINO_INLINE void output_1d(const __m512 (&m)[4], __m512 (&y)[2]) {
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]);
    y[1] = _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]);
  }
  // r = A e
  LOWBIT_WINO_INLINE void dy_1d(const __m512 (&e)[2], __m512 (&r)[4]) {
    r[0] = e[0];
    r[1] = _mm512_add_ps(e[0], e[1]);
    r[2] = _mm512_sub_ps(e[0], e[1]);
    r[3] = _mm512_sub_ps(_mm512_setzero_ps(), e[1]);
  }
};

template <>
struct Wino<4> {
  static constexpr int kA = 6;  // F(4x4, 3x3): 4x4 outputs from 6x6 inputs
  static constexpr float G[6][3] = {{0.25f, 0, 0},
                                    {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                    {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                    {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                    {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                    {0, 0, 1}};
  LOWBIT_WINO_INLINE void input_1d(const __m512 (&d)[6], __m512 (&t)[6]) {
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
    t[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));               // 4d0 - 5d2 + d4
    t[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));               // 4d1 - 5d3 + d5
    t[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));  // -4(d1+d2) + d3+d4
    t[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));   // 4(d1-d2) + d4-d3
    const __m512 d31 = _mm512_sub_ps(d[3], d[1]), d42 = _mm512_sub_ps(d[4], d[2]);
    t[3] = _mm512_fmadd_ps(two, d31, d42);   // 2(d3-d1) + d4-d2
    t[4] = _mm512_fnmadd_ps(two, d31, d42);  // 2(d1-d3) + d4-d2
  }
  LOWBIT_WINO_INLINE void output_1d(const __m512 (&m)[6], __m512 (&y)[4]) {
    const __m512 a = _mm512_add_ps(m[1], m[2]), b = _mm512_sub_ps(m[1], m[2]);
    const __m512 c = _mm512_add_ps(m[3], m[4]), d = _mm512_sub_ps(m[3], m[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], a), c);
    y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d, b);
    y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), c, a);
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d, b), m[5]);
  }
  LOWBIT_WINO_INLINE void dy_1d(const __m512 (&e)[4], __m512 (&r)[6]) {
    const __m512 p = _mm512_add_ps(e[0], e[2]), q = _mm512_add_ps(e[1], e[3]);
    const __m512 u = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), e[2], e[0]);  // e0 + 4e2
    const __m512 w = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), e[3], e[1]);  // e1 + 4e3
    r[0] = e[0];
    r[1] = _mm512_add_ps(p, q);
    r[2] = _mm512_sub_ps(p, q);
    r[3] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), w, u);
    r[4] = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), w, u);
    r[5] = e[3];
  }
};

// ------------------------------------------------------------------------------------------------
// Geometry of one tiled convolution
// ------------------------------------------------------------------------------------------------

// Cin channels of an H x W input (NHWC), Cout channels of a P x Q output, m x m output tiles at
// output (m ty, m tx) reading input tiles at (m ty - pad_h, m tx - pad_w).
struct WinoShape {
  int64_t N, H, W, Cin, Cout, pad_h, pad_w, P, Q;
  int64_t m;   // output tile size
  int64_t tb;  // tiles per block (a multiple of the forward micro-kernel's TR)
  int64_t TH() const { return ceil_div(P, m); }
  int64_t TW() const { return ceil_div(Q, m); }
  int64_t tiles_per_image() const { return TH() * TW(); }
  int64_t tiles() const { return N * tiles_per_image(); }
};

// Position of tile t (images, then tile rows, then tile columns), advanced one tile at a time
// (a division per tile costs as much as its transform).
struct TilePos {
  int64_t n, ty, tx;
  TilePos(const WinoShape& s, int64_t t) {
    const int64_t tpi = s.tiles_per_image(), r = t % tpi;
    n = t / tpi, ty = r / s.TW(), tx = r % s.TW();
  }
  void next(const WinoShape& s) {
    if (++tx < s.TW()) return;
    tx = 0;
    if (++ty < s.TH()) return;
    ty = 0, ++n;
  }
};

// Forward micro-kernel tile count: 6 x 4, 12 x 2 or 16 x 1 (tiles x vectors of output channels).
int forward_tr(int64_t K) { return K % 64 == 0 ? 6 : K % 32 == 0 ? 12 : 16; }

// Tiles per block. Forward: V and M of a block (4 alpha^2 tb (Cin + Cout) bytes) within 32 KiB of
// L1, at least one micro-kernel's TR. Backward-weight: 16 tiles when Cin + Cout <= 32, else 48 (a
// longer reduction per load/store of the dU accumulators wins once V and dM outgrow L1 anyway).
// Measured single-threaded on the ResNet-20 shapes against 8-96 tiles (F(2x2)).
int64_t forward_block_tiles(int64_t alpha, int64_t Cin, int64_t Cout) {
  const int64_t tr = forward_tr(Cout);
  return std::max<int64_t>(tr, (32768 / (4 * alpha * alpha * (Cin + Cout))) / tr * tr);
}
int64_t wgrad_block_tiles(int64_t Cin, int64_t Cout) { return Cin + Cout <= 32 ? 16 : 48; }

// ------------------------------------------------------------------------------------------------
// Transforms
// ------------------------------------------------------------------------------------------------

// U[xi][ci][co] = (G w G^T)[xi] of the 3x3 kernel wt(co, ci, r, s) = w[co s_co + ci s_ci + r s_r + s s_s]
// (Cout a multiple of 16). 16 output channels per vector (a gather unless s_co == 1), the products
// and sums in the order of the scalar formula, without FMA; parallel over input channels in
// ranges fixed by the shape. Every U element is computed on its own, so U is the same for any
// thread count. (It runs on every call: at batch 1 a serial scalar transform of a 64 x 64 layer
// took several times the convolution itself.)
template <int M>
LOWBIT_AVX512 void transform_weights_rows(int64_t ci0, int64_t ci1, int64_t Cin, int64_t Cout, const float* w,
                                          int64_t s_co, int64_t s_ci, int64_t s_r, int64_t s_s, float* U) {
  constexpr int A = Wino<M>::kA;
  const auto& G = Wino<M>::G;
  const __m512i lanes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(static_cast<int>(s_co)));
  for (int64_t ci = ci0; ci < ci1; ++ci)
    for (int64_t co = 0; co < Cout; co += 16) {
      const float* base = w + co * s_co + ci * s_ci;
      __m512 g[3][3], t[A][3];
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) {
          const float* p = base + r * s_r + s * s_s;
          g[r][s] = s_co == 1 ? _mm512_loadu_ps(p)
                              : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), __mmask16(0xFFFF), lanes, p, 4);
        }
      for (int a = 0; a < A; ++a)  // t = G g
        for (int s = 0; s < 3; ++s)
          t[a][s] = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(G[a][0]), g[0][s]),
                                                _mm512_mul_ps(_mm512_set1_ps(G[a][1]), g[1][s])),
                                  _mm512_mul_ps(_mm512_set1_ps(G[a][2]), g[2][s]));
      for (int a = 0; a < A; ++a)  // U = t G^T
        for (int b = 0; b < A; ++b)
          _mm512_storeu_ps(U + ((a * A + b) * Cin + ci) * Cout + co,
                           _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(t[a][0], _mm512_set1_ps(G[b][0])),
                                                       _mm512_mul_ps(t[a][1], _mm512_set1_ps(G[b][1]))),
                                         _mm512_mul_ps(t[a][2], _mm512_set1_ps(G[b][2]))));
    }
}

template <int M>
void transform_weights(int64_t Cin, int64_t Cout, const float* w, int64_t s_co, int64_t s_ci, int64_t s_r, int64_t s_s,
                       float* U) {
  // About 32 vectors of 16 output channels (a few microseconds) per range.
  const int64_t grain = std::max<int64_t>(1, 512 / Cout);
  parallel_for(0, Cin, grain, [&](int64_t ci0, int64_t ci1) {
    transform_weights_rows<M>(ci0, ci1, Cin, Cout, w, s_co, s_ci, s_r, s_s, U);
  });
}

// V = B^T d B of one tile for channels [c, c + 16): d[i][j] = row[i][col[j] + c]; with kMasked,
// column j reads lanes under colmask[j] only (0 or all 16: columns outside the image).
template <int M, bool kMasked>
LOWBIT_AVX512 inline __attribute__((always_inline)) void input_tile(const float* const (&row)[Wino<M>::kA],
                                                                    const int64_t (&col)[Wino<M>::kA],
                                                                    const __mmask16 (&colmask)[Wino<M>::kA], int64_t c,
                                                                    float* v, int64_t ld) {
  constexpr int A = Wino<M>::kA;
  __m512 t[A][A];
  for (int j = 0; j < A; ++j) {  // t = B^T d, one column of the tile at a time
    __m512 d[A], o[A];
    for (int i = 0; i < A; ++i) {
      const float* p = row[i] + col[j] + c;
      d[i] = kMasked ? _mm512_maskz_loadu_ps(colmask[j], p) : _mm512_loadu_ps(p);
    }
    Wino<M>::input_1d(d, o);
    for (int i = 0; i < A; ++i) t[i][j] = o[i];
  }
  for (int i = 0; i < A; ++i) {  // V = t B
    __m512 o[A];
    Wino<M>::input_1d(t[i], o);
    for (int j = 0; j < A; ++j) _mm512_storeu_ps(v + (i * A + j) * ld + c, o[j]);
  }
}

// V[xi][t][c] for tiles t0 .. t0 + nt of x (leading dimension of each xi: panel(tb, Cin)). Rows t in
// [nt, pad_to) are zeroed (the forward GEMM reads them, its results are discarded). Border tiles:
// rows outside the image read a row of zeros, columns outside it are masked loads at clamped
// (in-image) addresses.
template <int M>
LOWBIT_AVX512 void input_transform(const WinoShape& s, const float* x, int64_t t0, int64_t nt, int64_t pad_to,
                                   float* V) {
  constexpr int A = Wino<M>::kA, XI = A * A;
  const int64_t C = s.Cin, ld = panel(s.tb, C);
  for (int64_t t = nt; t < pad_to; ++t)
    for (int64_t xi = 0; xi < XI; ++xi) std::memset(V + xi * ld + t * C, 0, sizeof(float) * C);
  const float* zeros = thread_zeros(s.W * C);  // the row that rows outside the image read
  TilePos tp(s, t0);
  for (int64_t t = 0; t < nt; ++t, tp.next(s)) {
    const int64_t ih0 = M * tp.ty - s.pad_h, iw0 = M * tp.tx - s.pad_w;
    const float* img = x + tp.n * s.H * s.W * C;
    float* v = V + t * C;
    const float* row[A];
    int64_t col[A];
    __mmask16 colmask[A];
    for (int i = 0; i < A; ++i) {
      const int64_t ih = ih0 + i, iw = iw0 + i;
      row[i] = ih >= 0 && ih < s.H ? img + ih * s.W * C : zeros;
      col[i] = std::clamp<int64_t>(iw, 0, s.W - 1) * C;
      colmask[i] = iw >= 0 && iw < s.W ? __mmask16(0xFFFF) : __mmask16(0);
    }
    if (iw0 >= 0 && iw0 + A <= s.W) {
      for (int64_t c = 0; c < C; c += 16) input_tile<M, false>(row, col, colmask, c, v, ld);
    } else {
      for (int64_t c = 0; c < C; c += 16) input_tile<M, true>(row, col, colmask, c, v, ld);
    }
  }
}

// y tiles t0 .. t0 + nt = A^T M A (+ bias), from M[xi][t][k] (leading dimension panel(tb, Cout)).
template <int M>
LOWBIT_AVX512 void output_transform(const WinoShape& s, const float* Mb, const float* bias, int64_t t0, int64_t nt,
                                    float* y) {
  constexpr int A = Wino<M>::kA;
  const int64_t K = s.Cout, ld = panel(s.tb, K);
  TilePos tp(s, t0);
  for (int64_t t = 0; t < nt; ++t, tp.next(s)) {
    const int64_t oh = M * tp.ty, ow = M * tp.tx;
    const int rows = static_cast<int>(std::min<int64_t>(M, s.P - oh));
    const int cols = static_cast<int>(std::min<int64_t>(M, s.Q - ow));
    float* y0 = y + ((tp.n * s.P + oh) * s.Q + ow) * K;
    const float* m = Mb + t * K;
    for (int64_t k = 0; k < K; k += 16) {
      __m512 r[M][A];
      for (int j = 0; j < A; ++j) {  // r = A^T M, one column at a time
        __m512 mc[A], o[M];
        for (int i = 0; i < A; ++i) mc[i] = _mm512_loadu_ps(m + (i * A + j) * ld + k);
        Wino<M>::output_1d(mc, o);
        for (int a = 0; a < M; ++a) r[a][j] = o[a];
      }
      const __m512 b = bias ? _mm512_loadu_ps(bias + k) : _mm512_setzero_ps();
      for (int a = 0; a < M; ++a) {  // Y = r A
        __m512 o[M];
        Wino<M>::output_1d(r[a], o);
        float* ya = y0 + a * s.Q * K + k;
        if (rows == M && cols == M) {  // compile-time indices keep o[] in registers
          for (int bcol = 0; bcol < M; ++bcol) _mm512_storeu_ps(ya + bcol * K, _mm512_add_ps(o[bcol], b));
        } else if (a < rows) {
          for (int bcol = 0; bcol < M; ++bcol)
            if (bcol < cols) _mm512_storeu_ps(ya + bcol * K, _mm512_add_ps(o[bcol], b));
        }
      }
    }
  }
}

// D[xi][t][k] = (A dY A^T)[xi] for the m x m dy tiles t0 .. t0 + nt (leading dimension panel(tb, Cout)).
template <int M>
LOWBIT_AVX512 void dy_transform(const WinoShape& s, const float* dy, int64_t t0, int64_t nt, float* D) {
  constexpr int A = Wino<M>::kA;
  const int64_t K = s.Cout, ld = panel(s.tb, K);
  TilePos tp(s, t0);
  for (int64_t t = 0; t < nt; ++t, tp.next(s)) {
    const int64_t oh = M * tp.ty, ow = M * tp.tx;
    const int64_t rows = std::min<int64_t>(M, s.P - oh), cols = std::min<int64_t>(M, s.Q - ow);
    const float* base = dy + ((tp.n * s.P + oh) * s.Q + ow) * K;
    const float* e[M][M];
    for (int a = 0; a < M; ++a)
      for (int b = 0; b < M; ++b) e[a][b] = a < rows && b < cols ? base + (a * s.Q + b) * K : kZeros;
    float* d = D + t * K;
    for (int64_t k = 0; k < K; k += 16) {
      __m512 r[A][M];
      for (int b = 0; b < M; ++b) {  // r = A dY, one column at a time
        __m512 ec[M], o[A];
        for (int a = 0; a < M; ++a) ec[a] = _mm512_loadu_ps(e[a][b] + k);
        Wino<M>::dy_1d(ec, o);
        for (int i = 0; i < A; ++i) r[i][b] = o[i];
      }
      for (int i = 0; i < A; ++i) {  // dM = r A^T
        __m512 o[A];
        Wino<M>::dy_1d(r[i], o);
        for (int j = 0; j < A; ++j) _mm512_storeu_ps(d + (i * A + j) * ld + k, o[j]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// GEMMs in the transform domain
// ------------------------------------------------------------------------------------------------

// M[t][k] = sum_c V[t][c] U[c][k] for TR tiles x KV vectors of 16 output channels. CC > 0: the
// caller guarantees C == CC (= the row stride of V), so every broadcast address is a compile-time
// offset from one pointer (a runtime stride needs a register per row, which GCC spills).
template <int TR, int KV, int CC>
LOWBIT_AVX512 void gemm_tile(const float* V, const float* U, int64_t ldu, float* M, int64_t ldm, int64_t C_rt) {
  const int64_t C = CC > 0 ? CC : C_rt;
  __m512 acc[TR][KV];
  for (int i = 0; i < TR; ++i)
    for (int j = 0; j < KV; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    __m512 u[KV];
    for (int j = 0; j < KV; ++j) u[j] = _mm512_loadu_ps(U + c * ldu + 16 * j);
    for (int i = 0; i < TR; ++i) {
      const __m512 v = _mm512_set1_ps(V[i * C + c]);
      for (int j = 0; j < KV; ++j) acc[i][j] = _mm512_fmadd_ps(v, u[j], acc[i][j]);
    }
  }
  for (int i = 0; i < TR; ++i)
    for (int j = 0; j < KV; ++j) _mm512_storeu_ps(M + i * ldm + 16 * j, acc[i][j]);
}

// The XI GEMMs of one block: ntr (a multiple of TR) tiles.
template <int TR, int KV, int CC>
void gemm_block(int64_t XI, const float* V, const float* U, float* M, int64_t ntr, int64_t C, int64_t K, int64_t tb) {
  for (int64_t xi = 0; xi < XI; ++xi) {
    const float* Vx = V + xi * panel(tb, C);
    const float* Ux = U + xi * C * K;
    float* Mx = M + xi * panel(tb, K);
    for (int64_t k = 0; k < K; k += 16 * KV)
      for (int64_t t = 0; t < ntr; t += TR) gemm_tile<TR, KV, CC>(Vx + t * C, Ux + k, K, Mx + t * K + k, K, C);
  }
}

template <int TR, int KV>
void gemm_block_any_c(int64_t XI, const float* V, const float* U, float* M, int64_t ntr, int64_t C, int64_t K,
                      int64_t tb) {
  switch (C) {
    case 16: return gemm_block<TR, KV, 16>(XI, V, U, M, ntr, C, K, tb);
    case 32: return gemm_block<TR, KV, 32>(XI, V, U, M, ntr, C, K, tb);
    case 64: return gemm_block<TR, KV, 64>(XI, V, U, M, ntr, C, K, tb);
    case 128: return gemm_block<TR, KV, 128>(XI, V, U, M, ntr, C, K, tb);
    default: return gemm_block<TR, KV, 0>(XI, V, U, M, ntr, C, K, tb);
  }
}

// out = winograd(in, U) + bias over every tile; U from transform_weights<M>(s.Cin, s.Cout, ...).
template <int M>
void winograd_conv(const WinoShape& s, const float* in, const float* U, const float* bias, float* out) {
  constexpr int XI = Wino<M>::kA * Wino<M>::kA;
  const int64_t C = s.Cin, K = s.Cout, tiles = s.tiles();
  const int tr = forward_tr(K);
  parallel_for(0, ceil_div(tiles, s.tb), 1, [&](int64_t b0, int64_t b1) {
    float* V = thread_scratch(ScratchSlot::kWinogradV, XI * panel(s.tb, C));
    float* Mb = thread_scratch(ScratchSlot::kWinogradM, XI * panel(s.tb, K));
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t t0 = blk * s.tb, nt = std::min(s.tb, tiles - t0), ntr = ceil_div(nt, tr) * tr;
      input_transform<M>(s, in, t0, nt, ntr, V);
      if (tr == 6)
        gemm_block_any_c<6, 4>(XI, V, U, Mb, ntr, C, K, s.tb);
      else if (tr == 12)
        gemm_block_any_c<12, 2>(XI, V, U, Mb, ntr, C, K, s.tb);
      else
        gemm_block_any_c<16, 1>(XI, V, U, Mb, ntr, C, K, s.tb);
      output_transform<M>(s, Mb, bias, t0, nt, out);
    }
  });
}

// Tiles per chunk of the point-major order: V and M of a chunk about 16 MiB.
int64_t point_chunk_tiles(int64_t XI, int64_t Cin, int64_t Cout, int64_t tiles) {
  return std::clamp<int64_t>((int64_t(4) << 20) / (XI * (Cin + Cout)), 16, std::max<int64_t>(tiles, 16));
}

// The point-major order (WinogradOrder::kPoints): the tiles of a chunk of the batch are transformed
// first, then one GEMM per transform point over all of them (lowbit's GEMM, parallel inside), then
// the output transform. U is read once per chunk rather than once per block of a few tiles.
template <int M>
void winograd_conv_by_point(const WinoShape& s0, const float* in, const float* U, const float* bias, float* out) {
  constexpr int XI = Wino<M>::kA * Wino<M>::kA;
  const int64_t C = s0.Cin, K = s0.Cout, tiles = s0.tiles();
  WinoShape s = s0;
  s.tb = point_chunk_tiles(XI, C, K, tiles);
  float* V = thread_scratch(ScratchSlot::kWinogradV, XI * panel(s.tb, C));
  float* Mb = thread_scratch(ScratchSlot::kWinogradM, XI * panel(s.tb, K));
  for (int64_t t0 = 0; t0 < tiles; t0 += s.tb) {
    const int64_t nt = std::min(s.tb, tiles - t0);
    parallel_for(0, nt, 16,
                 [&](int64_t lo, int64_t hi) { input_transform<M>(s, in, t0 + lo, hi - lo, hi - lo, V + lo * C); });
    for (int64_t xi = 0; xi < XI; ++xi) {
      GemmArgs<float> a;
      a.M = nt, a.N = K, a.K = C;
      a.A = V + xi * panel(s.tb, C), a.lda = C;
      a.B = U + xi * C * K, a.ldb = K;
      a.C = Mb + xi * panel(s.tb, K), a.ldc = K;
      gemm(a);
    }
    parallel_for(0, nt, 16,
                 [&](int64_t lo, int64_t hi) { output_transform<M>(s, Mb + lo * K, bias, t0 + lo, hi - lo, out); });
  }
}

// dU[c][k] += sum_{t < nt} V[t][c] D[t][k] for CR input channels x KV vectors of output channels.
template <int CR, int KV>
LOWBIT_AVX512 void wgrad_tile(const float* V, int64_t ldv, const float* D, int64_t ldd, int64_t nt, float* dU,
                              int64_t ldu) {
  __m512 acc[CR][KV];
  for (int i = 0; i < CR; ++i)
    for (int j = 0; j < KV; ++j) acc[i][j] = _mm512_loadu_ps(dU + i * ldu + 16 * j);
  for (int64_t t = 0; t < nt; ++t) {
    __m512 d[KV];
    for (int j = 0; j < KV; ++j) d[j] = _mm512_loadu_ps(D + t * ldd + 16 * j);
    for (int i = 0; i < CR; ++i) {
      const __m512 v = _mm512_set1_ps(V[t * ldv + i]);
      for (int j = 0; j < KV; ++j) acc[i][j] = _mm512_fmadd_ps(v, d[j], acc[i][j]);
    }
  }
  for (int i = 0; i < CR; ++i)
    for (int j = 0; j < KV; ++j) _mm512_storeu_ps(dU + i * ldu + 16 * j, acc[i][j]);
}

template <int CR, int KV>
void wgrad_block(int64_t XI, const float* V, const float* D, int64_t nt, int64_t C, int64_t K, int64_t tb, float* dU) {
  for (int64_t xi = 0; xi < XI; ++xi) {
    const float* Vx = V + xi * panel(tb, C);
    const float* Dx = D + xi * panel(tb, K);
    float* dUx = dU + xi * C * K;
    for (int64_t c = 0; c < C; c += CR)
      for (int64_t k = 0; k < K; k += 16 * KV) wgrad_tile<CR, KV>(Vx + c, C, Dx + k, K, nt, dUx + c * K + k, K);
  }
}

// ------------------------------------------------------------------------------------------------
// The three passes for one tile size
// ------------------------------------------------------------------------------------------------

template <int M>
void forward_transformed(const Conv2dGeometry& g, const float* x, const float* U, const float* b, float* y,
                         WinogradOrder order) {
  constexpr int A = Wino<M>::kA;
  const int64_t C = g.C, K = g.K;
  const WinoShape s{g.N, g.H, g.W, C, K, g.pad_h, g.pad_w, g.P(), g.Q(), M, forward_block_tiles(A, C, K)};
  order == WinogradOrder::kPoints ? winograd_conv_by_point<M>(s, x, U, b, y) : winograd_conv<M>(s, x, U, b, y);
}

template <int M>
void forward(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y, WinogradOrder order) {
  constexpr int A = Wino<M>::kA;
  float* U = thread_scratch(ScratchSlot::kWinogradU, A * A * g.C * g.K);
  transform_weights<M>(g.C, g.K, w, 9 * g.C, 1, 3 * g.C, g.C, U);  // w[k][r][s][c]
  forward_transformed<M>(g, x, U, b, y, order);
}

template <int M>
void backward_data(const Conv2dGeometry& g, const float* dy, const float* w, float* dx, WinogradOrder order) {
  // dx = conv(dy, w') with w'[c][r][s][k] = w[k][2 - r][2 - s][c] and padding 2 - pad.
  constexpr int A = Wino<M>::kA;
  const int64_t C = g.C, K = g.K;
  float* U = thread_scratch(ScratchSlot::kWinogradU, A * A * C * K);
  // wt(c, k, r, s) = w[k][2 - r][2 - s][c]
  transform_weights<M>(K, C, w + 8 * C, 1, 9 * C, -3 * C, -C, U);
  const WinoShape s{g.N, g.P(), g.Q(), K, C, 2 - g.pad_h, 2 - g.pad_w, g.H, g.W, M, forward_block_tiles(A, K, C)};
  order == WinogradOrder::kPoints ? winograd_conv_by_point<M>(s, dy, U, nullptr, dx)
                                  : winograd_conv<M>(s, dy, U, nullptr, dx);
}

template <int M>
void backward_weight(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db,
                     WinogradOrder order) {
  constexpr int A = Wino<M>::kA, XI = A * A;
  const auto& G = Wino<M>::G;
  const int64_t N = g.N, C = g.C, K = g.K, P = g.P(), Q = g.Q();
  WinoShape s{N, g.H, g.W, C, K, g.pad_h, g.pad_w, P, Q, M, wgrad_block_tiles(C, K)};
  const int64_t tpi = s.tiles_per_image(), usize = XI * C * K;
  float* dU;
  if (order == WinogradOrder::kPoints) {
    // Chunks of tiles in order; per transform point dU += V^T dM, one GEMM over the chunk.
    const int64_t tiles = s.tiles();
    s.tb = point_chunk_tiles(XI, C, K, tiles);
    dU = thread_scratch(ScratchSlot::kWinogradPartials, usize);
    float* V = thread_scratch(ScratchSlot::kWinogradV, XI * panel(s.tb, C));
    float* D = thread_scratch(ScratchSlot::kWinogradM, XI * panel(s.tb, K));
    for (int64_t t0 = 0; t0 < tiles; t0 += s.tb) {
      const int64_t nt = std::min(s.tb, tiles - t0);
      parallel_for(0, nt, 16, [&](int64_t lo, int64_t hi) {
        input_transform<M>(s, x, t0 + lo, hi - lo, hi - lo, V + lo * C);
        dy_transform<M>(s, dy, t0 + lo, hi - lo, D + lo * K);
      });
      for (int64_t xi = 0; xi < XI; ++xi) {
        GemmArgs<float> a;
        a.trans_a = true;
        a.M = C, a.N = K, a.K = nt;
        a.A = V + xi * panel(s.tb, C), a.lda = C;
        a.B = D + xi * panel(s.tb, K), a.ldb = K;
        a.beta = t0 == 0 ? 0.0f : 1.0f;
        a.C = dU + xi * C * K, a.ldc = K;
        gemm(a);
      }
    }
    if (db) {  // one pass over dy in order, accumulated in double (no chunk partials here)
      std::vector<double> sum(K, 0.0);
      for (int64_t i = 0; i < N * P * Q; ++i)
        for (int64_t k = 0; k < K; ++k) sum[k] += dy[i * K + k];
      for (int64_t k = 0; k < K; ++k) db[k] = static_cast<float>(sum[k]);
    }
  } else {
    // Batch chunks fixed by the shape; chunk i accumulates dU in its own slice, summed in order.
    int64_t nchunks = std::clamp<int64_t>(N * tpi * M * M / 2048, 1, 16);
    nchunks = std::min({nchunks, std::max<int64_t>(1, (int64_t(1) << 22) / usize), N});
    dU = thread_scratch(ScratchSlot::kWinogradPartials, nchunks * (usize + K));
    float* dbp = dU + nchunks * usize;  // per-chunk bias-gradient partials
    parallel_chunks(0, N, nchunks, [&](int64_t chunk, int64_t n0, int64_t n1) {
      float* acc = dU + chunk * usize;
      std::memset(acc, 0, sizeof(float) * usize);
      float* V = thread_scratch(ScratchSlot::kWinogradV, XI * panel(s.tb, C));
      float* D = thread_scratch(ScratchSlot::kWinogradM, XI * panel(s.tb, K));
      for (int64_t t0 = n0 * tpi; t0 < n1 * tpi; t0 += s.tb) {
        const int64_t nt = std::min(s.tb, n1 * tpi - t0);
        input_transform<M>(s, x, t0, nt, nt, V);
        dy_transform<M>(s, dy, t0, nt, D);
        if (K % 32 == 0)
          wgrad_block<8, 2>(XI, V, D, nt, C, K, s.tb, acc);
        else
          wgrad_block<16, 1>(XI, V, D, nt, C, K, s.tb, acc);
      }
      if (db) {
        float* bp = dbp + chunk * K;
        std::fill(bp, bp + K, 0.0f);
        for (int64_t i = n0 * P * Q; i < n1 * P * Q; ++i)
          for (int64_t k = 0; k < K; ++k) bp[k] += dy[i * K + k];
      }
    });
    for (int64_t ch = 1; ch < nchunks; ++ch)
      for (int64_t i = 0; i < usize; ++i) dU[i] += dU[ch * usize + i];
    if (db)
      for (int64_t k = 0; k < K; ++k) {
        float sum = 0.0f;
        for (int64_t ch = 0; ch < nchunks; ++ch) sum += dbp[ch * K + k];
        db[k] = sum;
      }
  }
  // dw = G^T dU G per (k, c).
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      float t[3][A];
      for (int r = 0; r < 3; ++r)  // t = G^T dU
        for (int b = 0; b < A; ++b) {
          float sum = 0.0f;
          for (int a = 0; a < A; ++a) sum += G[a][r] * dU[((a * A + b) * C + c) * K + k];
          t[r][b] = sum;
        }
      for (int r = 0; r < 3; ++r)  // dw = t G
        for (int q = 0; q < 3; ++q) {
          float sum = 0.0f;
          for (int b = 0; b < A; ++b) sum += t[r][b] * G[b][q];
          dw[((k * 3 + r) * 3 + q) * C + c] = sum;
        }
    }
}

}  // namespace

bool winograd_applicable(const Conv2dGeometry& g) {
  return g.R == 3 && g.S == 3 && g.stride_h == 1 && g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1 && g.groups == 1 &&
         g.pad_h <= 2 && g.pad_w <= 2 && g.C % 16 == 0 && g.K % 16 == 0 && g.C <= kMaxChannels && g.K <= kMaxChannels;
}

void conv2d_forward_winograd(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y, int m,
                             WinogradOrder order) {
  m == 4 ? forward<4>(g, x, w, b, y, order) : forward<2>(g, x, w, b, y, order);
}
int64_t winograd_weight_size(const Conv2dGeometry& g, int m) { return (m + 2) * (m + 2) * g.C * g.K; }
void winograd_transform_weights(const Conv2dGeometry& g, const float* w, int m, float* U) {
  m == 4 ? transform_weights<4>(g.C, g.K, w, 9 * g.C, 1, 3 * g.C, g.C, U)
         : transform_weights<2>(g.C, g.K, w, 9 * g.C, 1, 3 * g.C, g.C, U);
}
void conv2d_forward_winograd_transformed(const Conv2dGeometry& g, const float* x, const float* U, const float* b,
                                         float* y, int m, WinogradOrder order) {
  m == 4 ? forward_transformed<4>(g, x, U, b, y, order) : forward_transformed<2>(g, x, U, b, y, order);
}
void conv2d_backward_data_winograd(const Conv2dGeometry& g, const float* dy, const float* w, float* dx, int m,
                                   WinogradOrder order) {
  m == 4 ? backward_data<4>(g, dy, w, dx, order) : backward_data<2>(g, dy, w, dx, order);
}
void conv2d_backward_weight_winograd(const Conv2dGeometry& g, const float* x, const float* dy, float* dw, float* db,
                                     int m, WinogradOrder order) {
  m == 4 ? backward_weight<4>(g, x, dy, dw, db, order) : backward_weight<2>(g, x, dy, dw, db, order);
}

}  // namespace lowbit::kernels
