// Winograd F(2x2, 3x3), AVX-512, NHWC / KRSC (contract: core/kernels/conv_winograd.h).
//
// Matrices (Lavin & Gray 2016, F(2x2, 3x3)):
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]      input tile 4x4  -> V = B^T d B
//   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]           kernel 3x3      -> U = G w G^T
//   A^T = [1 1 1 0; 0 1 -1 -1]                          product 4x4     -> Y = A^T M A
// Work is done in blocks of tb tiles (flattened over images, tile rows, tile columns): the input
// transform writes V[xi][t][c] (channels in the 16 lanes, as NHWC gives them), 16 small GEMMs
// M[xi][t][k] = sum_c V[xi][t][c] U[xi][c][k] run from per-thread buffers sized to stay in cache, and the
// output transform writes the 2x2 outputs of each tile. Backward-weight transforms dy with A
// (dM = A dY A^T), accumulates dU[xi][c][k] = sum_t V[xi][t][c] dM[xi][t][k] per batch chunk and
// maps dU back with G^T dU G.
#include "core/kernels/conv_winograd.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/kernels/cpu.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

constexpr int64_t kXi = 16;         // points of the 4x4 transform domain
constexpr int64_t kMaxChannels = 512;
alignas(64) const float kZeros[kMaxChannels] = {};  // stands in for pixels outside the image

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

// Per-thread scratch, one buffer per slot (0: V, 1: M or dM, 2: U, 3: dU partials),
// grown on demand, 64-byte aligned, uninitialised.
float* scratch(int slot, int64_t n) {
  thread_local std::unique_ptr<float[], FreeDeleter> buf[4];
  thread_local int64_t capacity[4] = {};
  if (capacity[slot] < n) {
    const int64_t bytes = ceil_div((n + 16) * int64_t(sizeof(float)), 64) * 64;
    buf[slot].reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    capacity[slot] = n;
  }
  return buf[slot].get();
}

// One convolution as seen by the tiled algorithm: Cin channels of an H x W input (NHWC), Cout
// channels of a P x Q output, 2x2 output tiles starting at output (2 ty, 2 tx), whose 4x4 input
// tiles start at input (2 ty - pad_h, 2 tx - pad_w).
struct WinoShape {
  int64_t N, H, W, Cin, Cout, pad_h, pad_w, P, Q;
  int64_t tb;  // tiles per block (a multiple of the forward micro-kernel's TR)
  int64_t TH() const { return (P + 1) / 2; }
  int64_t TW() const { return (Q + 1) / 2; }
  int64_t tiles_per_image() const { return TH() * TW(); }
  int64_t tiles() const { return N * tiles_per_image(); }
};

// Position of tile t (images, then tile rows, then tile columns), advanced one tile at a time
// (a division per tile costs as much as its transform).
// Forward micro-kernel tile count: 6 x 4, 12 x 2 or 16 x 1 (tiles x vectors of output channels).
int forward_tr(int64_t K) { return K % 64 == 0 ? 6 : K % 32 == 0 ? 12 : 16; }

// Tiles per block. Forward: V and M of a block (64 x tb x (Cin + Cout) bytes) within 32 KiB of L1,
// at least one micro-kernel's TR: 16 / 12 / 6 tiles for 16 / 32 / 64 channels. Backward-weight: 16
// tiles for 16 channels, else 48 (a longer reduction per load/store of the dU accumulators wins
// once the channels make V and dM too big for L1 anyway). Measured single-threaded on the ResNet-20
// shapes against 8-96 tiles: 7-14 % faster than a fixed 48 for the forward and the 16-channel
// backward-weight.
int64_t forward_block_tiles(int64_t Cin, int64_t Cout) {
  const int64_t tr = forward_tr(Cout);
  return std::max<int64_t>(tr, (32768 / (64 * (Cin + Cout))) / tr * tr);
}
int64_t wgrad_block_tiles(int64_t Cin, int64_t Cout) { return Cin + Cout <= 32 ? 16 : 48; }

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

// U[xi][ci][co] = (G w G^T)[xi] of the 3x3 kernel wt(co, ci, r, s).
template <class Weight>
void transform_weights(int64_t Cin, int64_t Cout, Weight wt, float* U) {
  for (int64_t co = 0; co < Cout; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci) {
      float g[3][3], t[4][3];
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) g[r][s] = wt(co, ci, r, s);
      for (int s = 0; s < 3; ++s) {  // t = G g
        t[0][s] = g[0][s];
        t[1][s] = 0.5f * (g[0][s] + g[1][s] + g[2][s]);
        t[2][s] = 0.5f * (g[0][s] - g[1][s] + g[2][s]);
        t[3][s] = g[2][s];
      }
      for (int i = 0; i < 4; ++i) {  // U = t G^T
        const float u[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]), 0.5f * (t[i][0] - t[i][1] + t[i][2]),
                            t[i][2]};
        for (int j = 0; j < 4; ++j) U[((i * 4 + j) * Cin + ci) * Cout + co] = u[j];
      }
    }
}

// V = B^T d B of one tile for channels [c, c + 16): d[i][j] = row[i][col[j] + c] (masked lanes read 0).
template <bool kMasked>
LOWBIT_AVX512 inline __attribute__((always_inline)) void input_tile(const float* const (&row)[4],
                                                                     const int64_t (&col)[4],
                                                                     const __mmask16 (&mask)[4][4], int64_t c,
                                                                     float* v, int64_t ld) {
  __m512 r[4][4];
  for (int j = 0; j < 4; ++j) {  // r = B^T d, one column of the tile at a time
    __m512 d[4];
    for (int i = 0; i < 4; ++i)
      d[i] = kMasked ? _mm512_maskz_loadu_ps(mask[i][j], row[i] + col[j] + c) : _mm512_loadu_ps(row[i] + col[j] + c);
    r[0][j] = _mm512_sub_ps(d[0], d[2]);
    r[1][j] = _mm512_add_ps(d[1], d[2]);
    r[2][j] = _mm512_sub_ps(d[2], d[1]);
    r[3][j] = _mm512_sub_ps(d[1], d[3]);
  }
  for (int i = 0; i < 4; ++i) {  // V = r B
    float* vi = v + (i * 4) * ld + c;
    _mm512_storeu_ps(vi, _mm512_sub_ps(r[i][0], r[i][2]));
    _mm512_storeu_ps(vi + ld, _mm512_add_ps(r[i][1], r[i][2]));
    _mm512_storeu_ps(vi + 2 * ld, _mm512_sub_ps(r[i][2], r[i][1]));
    _mm512_storeu_ps(vi + 3 * ld, _mm512_sub_ps(r[i][1], r[i][3]));
  }
}

// V[xi][t][c] = (B^T d B)[xi] for tiles t0 .. t0 + nt of x (leading dimension of each xi: tb * Cin).
// Rows t in [nt, pad_to) are zeroed (the forward GEMM reads them, its results are discarded).
// Border tiles use masked loads at clamped (in-image) addresses for the pixels outside the image.
LOWBIT_AVX512 void input_transform(const WinoShape& s, const float* x, int64_t t0, int64_t nt, int64_t pad_to,
                                   float* V) {
  const int64_t C = s.Cin, ld = s.tb * C;
  for (int64_t t = nt; t < pad_to; ++t)
    for (int64_t xi = 0; xi < kXi; ++xi) std::memset(V + xi * ld + t * C, 0, sizeof(float) * C);
  const __mmask16 all[4][4] = {};
  TilePos tp(s, t0);
  for (int64_t t = 0; t < nt; ++t, tp.next(s)) {
    const int64_t ih0 = 2 * tp.ty - s.pad_h, iw0 = 2 * tp.tx - s.pad_w;
    const float* img = x + tp.n * s.H * s.W * C;
    float* v = V + t * C;
    const float* row[4];
    int64_t col[4];
    if (ih0 >= 0 && ih0 + 4 <= s.H && iw0 >= 0 && iw0 + 4 <= s.W) {
      for (int i = 0; i < 4; ++i) row[i] = img + (ih0 + i) * s.W * C, col[i] = (iw0 + i) * C;
      for (int64_t c = 0; c < C; c += 16) input_tile<false>(row, col, all, c, v, ld);
    } else {
      __mmask16 mask[4][4];
      for (int i = 0; i < 4; ++i) {
        row[i] = img + std::clamp<int64_t>(ih0 + i, 0, s.H - 1) * s.W * C;
        col[i] = std::clamp<int64_t>(iw0 + i, 0, s.W - 1) * C;
      }
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          const bool inside = ih0 + i >= 0 && ih0 + i < s.H && iw0 + j >= 0 && iw0 + j < s.W;
          mask[i][j] = inside ? __mmask16(0xFFFF) : __mmask16(0);
        }
      for (int64_t c = 0; c < C; c += 16) input_tile<true>(row, col, mask, c, v, ld);
    }
  }
}

// y tiles t0 .. t0 + nt = A^T M A (+ bias), from M[xi][t][k] (leading dimension tb * Cout).
LOWBIT_AVX512 void output_transform(const WinoShape& s, const float* M, const float* bias, int64_t t0, int64_t nt,
                                    float* y) {
  const int64_t K = s.Cout, ld = s.tb * K;
  TilePos tp(s, t0);
  for (int64_t t = 0; t < nt; ++t, tp.next(s)) {
    const int64_t oh = 2 * tp.ty, ow = 2 * tp.tx;
    const bool row1 = oh + 1 < s.P, col1 = ow + 1 < s.Q;
    float* y00 = y + ((tp.n * s.P + oh) * s.Q + ow) * K;
    float* y10 = y00 + s.Q * K;
    const float* m = M + t * K;
    for (int64_t k = 0; k < K; k += 16) {
      __m512 a[4][2];
      for (int j = 0; j < 4; ++j) {  // a = A^T M (rows)
        const __m512 m0 = _mm512_loadu_ps(m + j * ld + k), m1 = _mm512_loadu_ps(m + (4 + j) * ld + k);
        const __m512 m2 = _mm512_loadu_ps(m + (8 + j) * ld + k), m3 = _mm512_loadu_ps(m + (12 + j) * ld + k);
        a[j][0] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        a[j][1] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
      }
      const __m512 b = bias ? _mm512_loadu_ps(bias + k) : _mm512_setzero_ps();
      for (int i = 0; i < 2; ++i) {  // Y = a A (columns)
        if (i == 1 && !row1) break;
        float* yr = (i == 0 ? y00 : y10) + k;
        _mm512_storeu_ps(yr, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0][i], a[1][i]), a[2][i]), b));
        if (col1) _mm512_storeu_ps(yr + K, _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(a[1][i], a[2][i]), a[3][i]), b));
      }
    }
  }
}

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

// The 16 GEMMs of one block: ntr (a multiple of TR) tiles.
template <int TR, int KV, int CC>
void gemm_block(const float* V, const float* U, float* M, int64_t ntr, int64_t C, int64_t K, int64_t tb) {
  for (int64_t xi = 0; xi < kXi; ++xi) {
    const float* Vx = V + xi * tb * C;
    const float* Ux = U + xi * C * K;
    float* Mx = M + xi * tb * K;
    for (int64_t k = 0; k < K; k += 16 * KV)
      for (int64_t t = 0; t < ntr; t += TR) gemm_tile<TR, KV, CC>(Vx + t * C, Ux + k, K, Mx + t * K + k, K, C);
  }
}

template <int TR, int KV>
void gemm_block_any_c(const float* V, const float* U, float* M, int64_t ntr, int64_t C, int64_t K, int64_t tb) {
  switch (C) {
    case 16: return gemm_block<TR, KV, 16>(V, U, M, ntr, C, K, tb);
    case 32: return gemm_block<TR, KV, 32>(V, U, M, ntr, C, K, tb);
    case 64: return gemm_block<TR, KV, 64>(V, U, M, ntr, C, K, tb);
    case 128: return gemm_block<TR, KV, 128>(V, U, M, ntr, C, K, tb);
    default: return gemm_block<TR, KV, 0>(V, U, M, ntr, C, K, tb);
  }
}

// out = winograd(in, U) + bias over every tile; U from transform_weights(s.Cin, s.Cout, ...).
void winograd_conv(const WinoShape& s, const float* in, const float* U, const float* bias, float* out) {
  const int64_t C = s.Cin, K = s.Cout, tiles = s.tiles();
  const int tr = forward_tr(K);
  parallel_for(0, ceil_div(tiles, s.tb), 1, [&](int64_t b0, int64_t b1) {
    float* V = scratch(0, kXi * s.tb * C);
    float* M = scratch(1, kXi * s.tb * K);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t t0 = blk * s.tb, nt = std::min(s.tb, tiles - t0), ntr = ceil_div(nt, tr) * tr;
      input_transform(s, in, t0, nt, ntr, V);
      if (tr == 6)
        gemm_block_any_c<6, 4>(V, U, M, ntr, C, K, s.tb);
      else if (tr == 12)
        gemm_block_any_c<12, 2>(V, U, M, ntr, C, K, s.tb);
      else
        gemm_block_any_c<16, 1>(V, U, M, ntr, C, K, s.tb);
      output_transform(s, M, bias, t0, nt, out);
    }
  });
}

// D[xi][t][k] = (A dY A^T)[xi] for the 2x2 dy tiles t0 .. t0 + nt (leading dimension tb * Cout).
LOWBIT_AVX512 void dy_transform(const WinoShape& s, const float* dy, int64_t t0, int64_t nt, float* D) {
  const int64_t K = s.Cout, ld = s.tb * K;
  TilePos tp(s, t0);
  for (int64_t t = 0; t < nt; ++t, tp.next(s)) {
    const int64_t oh = 2 * tp.ty, ow = 2 * tp.tx;
    const float* e[2][2];
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        e[a][b] = oh + a < s.P && ow + b < s.Q ? dy + ((tp.n * s.P + oh + a) * s.Q + ow + b) * K : kZeros;
    float* d = D + t * K;
    for (int64_t k = 0; k < K; k += 16) {
      __m512 r[4][2];
      for (int b = 0; b < 2; ++b) {  // r = A dY
        const __m512 e0 = _mm512_loadu_ps(e[0][b] + k), e1 = _mm512_loadu_ps(e[1][b] + k);
        r[0][b] = e0;
        r[1][b] = _mm512_add_ps(e0, e1);
        r[2][b] = _mm512_sub_ps(e0, e1);
        r[3][b] = _mm512_sub_ps(_mm512_setzero_ps(), e1);
      }
      for (int i = 0; i < 4; ++i) {  // dM = r A^T
        float* di = d + (i * 4) * ld + k;
        _mm512_storeu_ps(di, r[i][0]);
        _mm512_storeu_ps(di + ld, _mm512_add_ps(r[i][0], r[i][1]));
        _mm512_storeu_ps(di + 2 * ld, _mm512_sub_ps(r[i][0], r[i][1]));
        _mm512_storeu_ps(di + 3 * ld, _mm512_sub_ps(_mm512_setzero_ps(), r[i][1]));
      }
    }
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
void wgrad_block(const float* V, const float* D, int64_t nt, int64_t C, int64_t K, int64_t tb, float* dU) {
  for (int64_t xi = 0; xi < kXi; ++xi) {
    const float* Vx = V + xi * tb * C;
    const float* Dx = D + xi * tb * K;
    float* dUx = dU + xi * C * K;
    for (int64_t c = 0; c < C; c += CR)
      for (int64_t k = 0; k < K; k += 16 * KV) wgrad_tile<CR, KV>(Vx + c, C, Dx + k, K, nt, dUx + c * K + k, K);
  }
}

}  // namespace

bool winograd_applicable(const Conv2dGeometry& g) {
  return g.R == 3 && g.S == 3 && g.stride_h == 1 && g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1 &&
         g.groups == 1 && g.pad_h <= 2 && g.pad_w <= 2 && g.C % 16 == 0 && g.K % 16 == 0 &&
         g.C <= kMaxChannels && g.K <= kMaxChannels;
}

void conv2d_forward_winograd(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  const int64_t C = g.C, K = g.K;
  float* U = scratch(2, kXi * C * K);
  transform_weights(C, K, [&](int64_t k, int64_t c, int r, int s) { return w[((k * 3 + r) * 3 + s) * C + c]; }, U);
  const WinoShape s{g.N, g.H, g.W, C, K, g.pad_h, g.pad_w, g.P(), g.Q(), forward_block_tiles(C, K)};
  winograd_conv(s, x, U, b, y);
}

void conv2d_backward_data_winograd(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  // dx = conv(dy, w') with w'[c][r][s][k] = w[k][2 - r][2 - s][c] and padding 2 - pad.
  const int64_t C = g.C, K = g.K;
  float* U = scratch(2, kXi * C * K);
  transform_weights(K, C, [&](int64_t c, int64_t k, int r, int s) {
    return w[((k * 3 + (2 - r)) * 3 + (2 - s)) * C + c];
  }, U);
  const WinoShape s{g.N, g.P(), g.Q(), K, C, 2 - g.pad_h, 2 - g.pad_w, g.H, g.W, forward_block_tiles(K, C)};
  winograd_conv(s, dy, U, nullptr, dx);
}

void conv2d_backward_weight_winograd(const Conv2dGeometry& g, const float* x, const float* dy, float* dw,
                                     float* db) {
  const int64_t N = g.N, C = g.C, K = g.K, P = g.P(), Q = g.Q();
  const WinoShape s{N, g.H, g.W, C, K, g.pad_h, g.pad_w, P, Q, wgrad_block_tiles(C, K)};
  const int64_t tpi = s.tiles_per_image(), usize = kXi * C * K;
  // Batch chunks fixed by the shape; chunk i accumulates dU in its own slice, summed in order.
  int64_t nchunks = std::clamp<int64_t>(N * tpi / 512, 1, 16);
  nchunks = std::min({nchunks, std::max<int64_t>(1, (int64_t(1) << 22) / usize), N});
  float* dU = scratch(3, nchunks * (usize + K));
  float* dbp = dU + nchunks * usize;  // per-chunk bias-gradient partials
  parallel_chunks(0, N, nchunks, [&](int64_t chunk, int64_t n0, int64_t n1) {
    float* acc = dU + chunk * usize;
    std::memset(acc, 0, sizeof(float) * usize);
    float* V = scratch(0, kXi * s.tb * C);
    float* D = scratch(1, kXi * s.tb * K);
    for (int64_t t0 = n0 * tpi; t0 < n1 * tpi; t0 += s.tb) {
      const int64_t nt = std::min(s.tb, n1 * tpi - t0);
      input_transform(s, x, t0, nt, nt, V);
      dy_transform(s, dy, t0, nt, D);
      if (K % 32 == 0)
        wgrad_block<8, 2>(V, D, nt, C, K, s.tb, acc);
      else
        wgrad_block<16, 1>(V, D, nt, C, K, s.tb, acc);
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
  // dw = G^T dU G per (k, c).
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      float u[4][4], t[3][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) u[i][j] = dU[((i * 4 + j) * C + c) * K + k];
      for (int j = 0; j < 4; ++j) {  // t = G^T u
        t[0][j] = u[0][j] + 0.5f * (u[1][j] + u[2][j]);
        t[1][j] = 0.5f * (u[1][j] - u[2][j]);
        t[2][j] = 0.5f * (u[1][j] + u[2][j]) + u[3][j];
      }
      for (int r = 0; r < 3; ++r) {  // dw = t G
        float* o = dw + (k * 3 + r) * 3 * C + c;
        o[0] = t[r][0] + 0.5f * (t[r][1] + t[r][2]);
        o[C] = 0.5f * (t[r][1] - t[r][2]);
        o[2 * C] = 0.5f * (t[r][1] + t[r][2]) + t[r][3];
      }
    }
  if (db)
    for (int64_t k = 0; k < K; ++k) {
      float sum = 0.0f;
      for (int64_t ch = 0; ch < nchunks; ++ch) sum += dbp[ch * K + k];
      db[k] = sum;
    }
}

}  // namespace lowbit::kernels
