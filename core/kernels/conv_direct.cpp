// AVX-512 direct convolution, NHWC / KRSC, no im2col.
//
// Forward and backward-data share one register-blocked micro-kernel (conv_tile): MR output pixels
// of one row x NR vectors of 16 output channels, accumulated in registers over a list of taps,
// each tap a contiguous run of L reduction elements (input channels, or S*C when the kernel
// columns are adjacent in memory). Input values are broadcast, packed weights are loaded as
// vectors ([tap][l][channels padded to 16]). Padding: the input rows a task needs are staged into
// a zero-padded thread-local buffer; rows outside the image are skipped as taps.
// Backward-data is the same kernel over dy with flipped/transposed weights, one pass per column
// phase (w mod stride) so that consecutive outputs read consecutive dy pixels.
// Backward-weight (wgrad_tile) keeps an MR (output channels) x NR (vectors along the tap run) block
// of dw in registers and reduces over the pixels of a staged batch slice; the batch is split into
// chunks fixed by the shape, whose partials are summed in chunk order.
// Shape-specific paths: RGB first layers (compile-time pixel stride in the forward tile; a
// small-patch backward-weight kernel with the whole R*S*C patch in registers), strided unpadded 1x1
// (forward tile on x in place; backward-data = memset + tile), pointwise convs on <= 8x8 images as
// one GEMM, and unpadded backward-weight reading x without staging.
#include "core/kernels/conv_direct.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "core/kernels/cpu.h"
#include "core/kernels/gemm.h"
#include "core/kernels/scratch.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

using AlignedPtr = AlignedFloats;

// Per-thread staging buffer (used only inside one task body, never across a parallel call).
float* stage_buffer(int64_t n) { return thread_scratch(ScratchSlot::kConvStage, n); }

// dst[i][j][c] = img[ih0 + i][iw0 + j][c] for rows [ih0, ih1), cols [iw0, iw1); zero outside the image.
void stage_rows(const float* img, int64_t H, int64_t W, int64_t C, int64_t ih0, int64_t ih1, int64_t iw0, int64_t iw1,
                float* dst) {
  const int64_t ws = iw1 - iw0;
  const int64_t lo = std::max<int64_t>(iw0, 0), hi = std::min(iw1, W);
  for (int64_t ih = ih0; ih < ih1; ++ih) {
    float* d = dst + (ih - ih0) * ws * C;
    if (ih < 0 || ih >= H || hi <= lo) {
      std::memset(d, 0, sizeof(float) * ws * C);
      continue;
    }
    if (lo > iw0) std::memset(d, 0, sizeof(float) * (lo - iw0) * C);
    std::memcpy(d + (lo - iw0) * C, img + (ih * W + lo) * C, sizeof(float) * (hi - lo) * C);
    if (iw1 > hi) std::memset(d + (hi - iw0) * C, 0, sizeof(float) * (iw1 - hi) * C);
  }
}

// Splits n items into ceil(n / max_tile) tiles of balanced sizes; calls fn(start, size).
template <class F>
void for_each_tile(int64_t n, int64_t max_tile, F&& fn) {
  const int64_t tiles = ceil_div(n, max_tile);
  if (tiles == 0) return;
  const int64_t base = n / tiles, extra = n % tiles;
  int64_t start = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t size = base + (t < extra ? 1 : 0);
    fn(start, size);
    start += size;
  }
}

// ------------------------------------------------------------------------------------------------
// Forward / backward-data micro-kernel
// ------------------------------------------------------------------------------------------------

struct Tap {
  int64_t in;  // offset of the tap's first input element, relative to TileArgs::in
  int64_t w;   // offset of the tap's packed weights, relative to TileArgs::w
};

struct TileArgs {
  const float* in;  // input for pixel 0 of the tile
  int64_t in_ps;    // floats between consecutive pixels of the tile in the input
  const Tap* taps;
  int64_t ntaps;
  int64_t L;       // reduction length of every tap
  const float* w;  // packed weights: tap.w + l * ldw + 16 * vector
  int64_t ldw;
  float* out;         // output of pixel 0
  int64_t out_ps;     // floats between consecutive output pixels
  const float* bias;  // NR * 16 initial values, or null for zeros
  int last_lanes;     // valid lanes of the last output vector (1..16)
};

// PS > 0: the caller guarantees in_ps == PS, so every broadcast address is a compile-time offset (a
// runtime stride needs one register per pixel offset, which GCC spills and reloads through port 0).
// Stores an MR x NR tile of accumulators at out + m * row_stride; the last vector of each row keeps
// only its first last_lanes lanes (the K tail).
template <int MR, int NR>
LOWBIT_AVX512 inline __attribute__((always_inline)) void store_tile(const __m512 (&acc)[MR][NR], float* out,
                                                                    int64_t row_stride, int last_lanes) {
  const __mmask16 last = static_cast<__mmask16>((1u << last_lanes) - 1u);
#pragma GCC unroll 28
  for (int m = 0; m < MR; ++m) {
    float* o = out + m * row_stride;
#pragma GCC unroll 4
    for (int v = 0; v < NR; ++v) {
      if (v == NR - 1 && last_lanes < 16)
        _mm512_mask_storeu_ps(o + 16 * v, last, acc[m][v]);
      else
        _mm512_storeu_ps(o + 16 * v, acc[m][v]);
    }
  }
}

template <int MR, int NR, int PS = 0>
LOWBIT_AVX512 void conv_tile(const TileArgs& a) {
  __m512 acc[MR][NR];
#pragma GCC unroll 4
  for (int v = 0; v < NR; ++v) {
    const __m512 init = a.bias ? _mm512_loadu_ps(a.bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 28
    for (int m = 0; m < MR; ++m) acc[m][v] = init;
  }
  const int64_t ps = PS > 0 ? PS : a.in_ps, ldw = a.ldw, L = a.L;
  for (int64_t t = 0; t < a.ntaps; ++t) {
    const float* ip = a.in + a.taps[t].in;
    const float* wp = a.w + a.taps[t].w;
    for (int64_t l = 0; l < L; ++l, ++ip, wp += ldw) {
      __m512 wv[NR];
#pragma GCC unroll 4
      for (int v = 0; v < NR; ++v) wv[v] = _mm512_loadu_ps(wp + 16 * v);
#pragma GCC unroll 28
      for (int m = 0; m < MR; ++m) {
        const __m512 xv = _mm512_set1_ps(ip[m * ps]);
#pragma GCC unroll 4
        for (int v = 0; v < NR; ++v) acc[m][v] = _mm512_fmadd_ps(xv, wv[v], acc[m][v]);
      }
    }
  }
  store_tile<MR, NR>(acc, a.out, a.out_ps, a.last_lanes);
}

using TileFn = void (*)(const TileArgs&);
constexpr int kTileMaxMR[5] = {0, 28, 14, 9, 6};

template <int NR, std::size_t... I>
constexpr std::array<TileFn, sizeof...(I)> tile_table(std::index_sequence<I...>) {
  return {{&conv_tile<int(I) + 1, NR>...}};
}
// RGB first layers (pixel stride 3 = C, stride 1) with at most 16 output channels.
template <std::size_t... I>
constexpr std::array<TileFn, sizeof...(I)> tile_table_rgb(std::index_sequence<I...>) {
  return {{&conv_tile<int(I) + 1, 1, 3>...}};
}
constexpr auto kTile1Rgb = tile_table_rgb(std::make_index_sequence<kTileMaxMR[1]>{});
constexpr auto kTile1 = tile_table<1>(std::make_index_sequence<kTileMaxMR[1]>{});
constexpr auto kTile2 = tile_table<2>(std::make_index_sequence<kTileMaxMR[2]>{});
constexpr auto kTile3 = tile_table<3>(std::make_index_sequence<kTileMaxMR[3]>{});
constexpr auto kTile4 = tile_table<4>(std::make_index_sequence<kTileMaxMR[4]>{});

TileFn tile_fn(int64_t mr, int64_t nr, int64_t in_ps) {
  if (nr == 1 && in_ps == 3) return kTile1Rgb[mr - 1];
  switch (nr) {
    case 1: return kTile1[mr - 1];
    case 2: return kTile2[mr - 1];
    case 3: return kTile3[mr - 1];
    default: return kTile4[mr - 1];
  }
}

// Runs conv tiles over `npix` pixels x `nvec` output vectors: vectors in blocks of up to 4,
// pixels in balanced tiles of up to kTileMaxMR[block]. Rewrites a.in/w/out/bias/last_lanes per
// tile (a is taken by reference: copying the freshly built struct would stall on store forwarding).
void run_tiles(TileArgs& a, int64_t npix, int64_t nvec, int last_lanes, const float* bias) {
  const float* in = a.in;
  const float* w = a.w;
  float* out = a.out;
  for (int64_t v0 = 0; v0 < nvec; v0 += 4) {
    const int64_t nr = std::min<int64_t>(4, nvec - v0);
    a.w = w + 16 * v0;
    a.bias = bias ? bias + 16 * v0 : nullptr;
    a.last_lanes = v0 + nr == nvec ? last_lanes : 16;
    for_each_tile(npix, kTileMaxMR[nr], [&](int64_t j0, int64_t mr) {
      a.in = in + j0 * a.in_ps;
      a.out = out + j0 * a.out_ps + 16 * v0;
      tile_fn(mr, nr, a.in_ps)(a);
    });
  }
}

// Row blocks per image so that there are at least ~8 tasks per thread.
int64_t rows_per_task(int64_t N, int64_t P) {
  const int64_t want = 8 * num_threads();
  const int64_t blocks = std::min(P, std::max<int64_t>(1, ceil_div(want, N)));
  return ceil_div(P, blocks);
}

// ------------------------------------------------------------------------------------------------
// Backward-weight micro-kernel
// ------------------------------------------------------------------------------------------------

struct WgradArgs {
  const float* x;   // staged input for (row 0, pixel 0) of the tap, at the block's first lane
  int64_t x_ps;     // floats between consecutive pixels
  int64_t x_rs;     // floats between consecutive output rows
  const float* dy;  // dy for (row 0, pixel 0) at the block's first output channel
  int64_t dy_ps, dy_rs;
  int64_t rows, cols;
  float* dw;        // dw for the block's first output channel and lane
  int64_t ldd;      // floats between output channels in dw
  bool accumulate;  // add to dw instead of overwriting
  int last_lanes;   // valid lanes of the last vector (1..16)
};

template <int MR, int NR>
LOWBIT_AVX512 void wgrad_tile(const WgradArgs& a) {
  const __mmask16 last = static_cast<__mmask16>((1u << a.last_lanes) - 1u);
  __mmask16 mask[NR];
#pragma GCC unroll 4
  for (int v = 0; v < NR; ++v) mask[v] = v == NR - 1 ? last : __mmask16(0xFFFF);
  __m512 acc[MR][NR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NR; ++v)
      acc[m][v] = a.accumulate ? _mm512_maskz_loadu_ps(mask[v], a.dw + m * a.ldd + 16 * v) : _mm512_setzero_ps();
  for (int64_t row = 0; row < a.rows; ++row) {
    const float* xp = a.x + row * a.x_rs;
    const float* dp = a.dy + row * a.dy_rs;
    for (int64_t q = 0; q < a.cols; ++q, xp += a.x_ps, dp += a.dy_ps) {
      __m512 xv[NR];
#pragma GCC unroll 4
      for (int v = 0; v < NR; ++v) xv[v] = _mm512_maskz_loadu_ps(mask[v], xp + 16 * v);
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) {
        const __m512 d = _mm512_set1_ps(dp[m]);
#pragma GCC unroll 4
        for (int v = 0; v < NR; ++v) acc[m][v] = _mm512_fmadd_ps(d, xv[v], acc[m][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NR; ++v) _mm512_mask_storeu_ps(a.dw + m * a.ldd + 16 * v, mask[v], acc[m][v]);
}

using WgradFn = void (*)(const WgradArgs&);
constexpr int kWgradMaxMR[4] = {0, 16, 12, 8};

template <int NR, std::size_t... I>
constexpr std::array<WgradFn, sizeof...(I)> wgrad_table(std::index_sequence<I...>) {
  return {{&wgrad_tile<int(I) + 1, NR>...}};
}
constexpr auto kWgrad1 = wgrad_table<1>(std::make_index_sequence<kWgradMaxMR[1]>{});
constexpr auto kWgrad2 = wgrad_table<2>(std::make_index_sequence<kWgradMaxMR[2]>{});
constexpr auto kWgrad3 = wgrad_table<3>(std::make_index_sequence<kWgradMaxMR[3]>{});

WgradFn wgrad_fn(int64_t mr, int64_t nr) {
  switch (nr) {
    case 1: return kWgrad1[mr - 1];
    case 2: return kWgrad2[mr - 1];
    default: return kWgrad3[mr - 1];
  }
}

// ------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------

void forward_nhwc(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  const int64_t N = g.N, C = g.C, H = g.H, W = g.W, K = g.K, R = g.R, S = g.S, G = g.groups;
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, pw = g.pad_w, dh = g.dil_h, dw = g.dil_w;
  const int64_t Kp = round_up(Kg, 16), kvec = Kp / 16;
  const int last_lanes = static_cast<int>(Kg - (kvec - 1) * 16);

  // Packed weights [G][R][S][Cg][Kp] and bias [G][Kp], zero-padded channels.
  const int64_t wg_size = R * S * Cg * Kp;
  std::vector<float> wpk(G * wg_size, 0.0f);
  for (int64_t gi = 0; gi < G; ++gi)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t rs = 0; rs < R * S; ++rs)
        for (int64_t c = 0; c < Cg; ++c)
          wpk[gi * wg_size + (rs * Cg + c) * Kp + k] = w[((gi * Kg + k) * R * S + rs) * Cg + c];
  std::vector<float> bpk;
  if (b) {
    bpk.assign(G * Kp, 0.0f);
    for (int64_t gi = 0; gi < G; ++gi)
      for (int64_t k = 0; k < Kg; ++k) bpk[gi * Kp + k] = b[gi * Kg + k];
  }

  // Adjacent kernel columns form one contiguous run of S*C input values per kernel row.
  const bool merged = G == 1 && dw == 1;
  const int64_t L = merged ? S * C : Cg;
  const int64_t Wst = (Q - 1) * sw + (S - 1) * dw + 1;  // staged columns, starting at iw = -pw
  const bool staged = pw > 0 || Wst > W;
  const int64_t rpt = rows_per_task(N, P);
  const int64_t blocks = ceil_div(P, rpt);

  parallel_for(0, N * blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<Tap> taps(R * S);
    for (int64_t u = lo; u < hi; ++u) {
      const int64_t n = u / blocks, p0 = (u % blocks) * rpt, p1 = std::min(P, p0 + rpt);
      const int64_t ih0 = std::max<int64_t>(0, p0 * sh - ph);
      const int64_t ih1 = std::min(H, (p1 - 1) * sh - ph + (R - 1) * dh + 1);
      const float* base;
      int64_t rs, row0;
      if (staged) {
        float* buf = stage_buffer(std::max<int64_t>(0, ih1 - ih0) * Wst * C);
        stage_rows(x + n * H * W * C, H, W, C, ih0, ih1, -pw, Wst - pw, buf);
        base = buf, rs = Wst * C, row0 = ih0;
      } else {
        base = x + n * H * W * C, rs = W * C, row0 = 0;
      }
      for (int64_t p = p0; p < p1; ++p) {
        int64_t nt = 0;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t ih = p * sh - ph + r * dh;
          if (ih < 0 || ih >= H) continue;
          const int64_t roff = (ih - row0) * rs;
          if (merged) {
            taps[nt++] = {roff, r * S * Cg * Kp};
          } else {
            for (int64_t s = 0; s < S; ++s) taps[nt++] = {roff + s * dw * C, (r * S + s) * Cg * Kp};
          }
        }
        for (int64_t gi = 0; gi < G; ++gi) {
          TileArgs a{};
          a.in = base + gi * Cg;
          a.in_ps = sw * C;
          a.taps = taps.data();
          a.ntaps = nt;
          a.L = L;
          a.w = wpk.data() + gi * wg_size;
          a.ldw = Kp;
          a.out = y + (n * P + p) * Q * K + gi * Kg;
          a.out_ps = K;
          run_tiles(a, Q, kvec, last_lanes, b ? bpk.data() + gi * Kp : nullptr);
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Backward data
// ------------------------------------------------------------------------------------------------

void backward_data_nhwc(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  const int64_t N = g.N, C = g.C, H = g.H, W = g.W, K = g.K, R = g.R, S = g.S, G = g.groups;
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, pw = g.pad_w, dh = g.dil_h, dw = g.dil_w;
  const int64_t Cp = round_up(Cg, 16), cvec = Cp / 16;
  const int last_lanes = static_cast<int>(Cg - (cvec - 1) * 16);

  // Packed weights [G][R][S'][Kg][Cp] with kernel columns flipped (s' = S-1-s).
  const int64_t wg_size = R * S * Kg * Cp;
  std::vector<float> wpk(G * wg_size, 0.0f);
  for (int64_t gi = 0; gi < G; ++gi)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t c = 0; c < Cg; ++c)
            wpk[gi * wg_size + ((r * S + (S - 1 - s)) * Kg + k) * Cp + c] =
                w[(((gi * Kg + k) * R + r) * S + s) * Cg + c];

  const bool merged = G == 1 && sw == 1 && dw == 1;
  const int64_t L = merged ? S * K : Kg;
  // dy columns read: q = (w + pw - s*dw) / sw over w in [0, W), s in [0, S).
  const int64_t qmin = floor_div(pw - (S - 1) * dw, sw), qmax = floor_div(W - 1 + pw, sw);
  const bool staged = qmin < 0 || qmax >= Q;
  const int64_t Qst = qmax - qmin + 1;
  const int64_t rpt = rows_per_task(N, H);
  const int64_t blocks = ceil_div(H, rpt);

  parallel_for(0, N * blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<Tap> taps(R * S);
    for (int64_t u = lo; u < hi; ++u) {
      const int64_t n = u / blocks, h0 = (u % blocks) * rpt, h1 = std::min(H, h0 + rpt);
      const int64_t p0 = std::max<int64_t>(0, ceil_div(std::max<int64_t>(0, h0 + ph - (R - 1) * dh), sh));
      const int64_t p1 = std::min(P, floor_div(h1 - 1 + ph, sh) + 1);
      const float* base;
      int64_t rs, row0, col0;
      if (staged) {
        float* buf = stage_buffer(std::max<int64_t>(0, p1 - p0) * Qst * K);
        stage_rows(dy + n * P * Q * K, P, Q, K, p0, p1, qmin, qmax + 1, buf);
        base = buf, rs = Qst * K, row0 = p0, col0 = qmin;
      } else {
        base = dy + n * P * Q * K, rs = Q * K, row0 = 0, col0 = 0;
      }
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t phase = 0; phase < std::min(sw, W); ++phase) {
          const int64_t npix = ceil_div(W - phase, sw);
          int64_t nt = 0;
          for (int64_t r = 0; r < R; ++r) {
            const int64_t t = h + ph - r * dh;
            if (t < 0 || t % sh != 0 || t / sh >= P) continue;
            const int64_t roff = (t / sh - row0) * rs;
            if (merged) {
              taps[nt++] = {roff + (phase + pw - (S - 1) - col0) * K, r * S * Kg * Cp};
            } else {
              for (int64_t s = 0; s < S; ++s) {
                const int64_t u2 = phase + pw - s * dw;
                if (((u2 % sw) + sw) % sw != 0) continue;
                taps[nt++] = {roff + (floor_div(u2, sw) - col0) * K, ((r * S + (S - 1 - s)) * Kg) * Cp};
              }
            }
          }
          for (int64_t gi = 0; gi < G; ++gi) {
            TileArgs a{};
            a.in = base + gi * Kg;
            a.in_ps = K;
            a.taps = taps.data();
            a.ntaps = nt;
            a.L = L;
            a.w = wpk.data() + gi * wg_size;
            a.ldw = Cp;
            a.out = dx + ((n * H + h) * W + phase) * C + gi * Cg;
            a.out_ps = sw * C;
            run_tiles(a, npix, cvec, last_lanes, nullptr);
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Backward data of a strided 1x1 convolution without padding (projection shortcuts)
//
// dx is zero except at (p*sh, q*sw), where it is dy[p][q] . w: per image, the dx block is cleared with
// one memset (large memsets skip the read-for-ownership) while it is cache resident, then the strided
// pixels are computed by the conv tile straight from dy (no staging, no zero tiles).
// ------------------------------------------------------------------------------------------------

void backward_data_1x1_strided(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  const int64_t N = g.N, C = g.C, H = g.H, W = g.W, K = g.K, P = g.P(), Q = g.Q();
  const int64_t sh = g.stride_h, sw = g.stride_w;
  const int64_t Cp = round_up(C, 16), cvec = Cp / 16;
  const int last_lanes = static_cast<int>(C - (cvec - 1) * 16);
  AlignedPtr wpk = aligned_floats(K * Cp);  // [K][Cp], zero-padded channels
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < Cp; ++c) wpk[k * Cp + c] = c < C ? w[k * C + c] : 0.0f;
  const Tap tap{0, 0};
  parallel_for(0, N, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      std::memset(dx + n * H * W * C, 0, sizeof(float) * H * W * C);
      for (int64_t p = 0; p < P; ++p) {
        TileArgs a{};
        a.in = dy + (n * P + p) * Q * K;
        a.in_ps = K;
        a.taps = &tap;
        a.ntaps = 1;
        a.L = K;
        a.w = wpk.get();
        a.ldw = Cp;
        a.out = dx + (n * H + p * sh) * W * C;
        a.out_ps = sw * C;
        run_tiles(a, Q, cvec, last_lanes, nullptr);
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Channel-blocked path (input channels a multiple of 16 per group)
//
// The input rows a task needs are staged as [channel block][row][col][16], so consecutive pixels
// are 16 (or 32, stride 2) floats apart and every broadcast address is a compile-time offset.
// With SW > 1 the kernel also reuses each broadcast input value across SW adjacent kernel columns
// (stride-1 rows): pixel j, column s reads input column j + s.
// Weights per (group, block of NR output vectors): [kernel row][channel][tap column][NR * 16].
// ------------------------------------------------------------------------------------------------

struct BlockedArgs {
  const float* in;  // staged input, pixel 0 of the tile (taps add their offsets)
  const Tap* taps;
  int64_t ntaps;
  int64_t ncb;     // channel blocks per tap
  int64_t in_cb;   // floats between channel blocks of the staged input
  const float* w;  // weights: tap.w + cb * w_cb + c * w_c + (s * NR + v) * 16
  int64_t w_c, w_cb;
  float* out;         // output of pixel 0
  int64_t out_ps;     // floats between consecutive output pixels
  const float* bias;  // NR * 16 initial values, or null for zeros
  int last_lanes;     // valid lanes of the last output vector (1..16)
};

template <int MR, int NR, int SW, int SX>
LOWBIT_AVX512 void blocked_tile(const BlockedArgs& a) {
  __m512 acc[MR][NR];
#pragma GCC unroll 4
  for (int v = 0; v < NR; ++v) {
    const __m512 init = a.bias ? _mm512_loadu_ps(a.bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 28
    for (int m = 0; m < MR; ++m) acc[m][v] = init;
  }
  const int64_t w_c = a.w_c;
  for (int64_t t = 0; t < a.ntaps; ++t) {
    for (int64_t cb = 0; cb < a.ncb; ++cb) {
      const float* ip = a.in + a.taps[t].in + cb * a.in_cb;
      const float* wp = a.w + a.taps[t].w + cb * a.w_cb;
      for (int c = 0; c < 16; ++c, ++ip, wp += w_c) {
        __m512 wv[SW][NR];
#pragma GCC unroll 4
        for (int s = 0; s < SW; ++s)
#pragma GCC unroll 4
          for (int v = 0; v < NR; ++v) wv[s][v] = _mm512_loadu_ps(wp + (s * NR + v) * 16);
        if constexpr (SW == 1) {
#pragma GCC unroll 28
          for (int m = 0; m < MR; ++m) {
            const __m512 xv = _mm512_set1_ps(ip[m * 16 * SX]);
#pragma GCC unroll 4
            for (int v = 0; v < NR; ++v) acc[m][v] = _mm512_fmadd_ps(xv, wv[0][v], acc[m][v]);
          }
        } else {
#pragma GCC unroll 32
          for (int i = 0; i < MR + SW - 1; ++i) {
            const __m512 xv = _mm512_set1_ps(ip[i * 16]);
#pragma GCC unroll 4
            for (int s = 0; s < SW; ++s) {
              const int j = i - s;
              if (j < 0 || j >= MR) continue;
#pragma GCC unroll 4
              for (int v = 0; v < NR; ++v) acc[j][v] = _mm512_fmadd_ps(xv, wv[s][v], acc[j][v]);
            }
          }
        }
      }
    }
  }
  store_tile<MR, NR>(acc, a.out, a.out_ps, a.last_lanes);
}

using BlockedFn = void (*)(const BlockedArgs&);

// Largest pixel tile for NR output vectors and SW reused columns: accumulators + weights + one
// broadcast must fit the 32 vector registers.
constexpr int blocked_max_mr(int nr, int sw) {
  const int by_regs = (sw == 1 ? 30 : 30 - sw * nr) / nr;
  return by_regs < 28 / nr ? by_regs : 28 / nr;
}

template <int NR, int SW, int SX, std::size_t... I>
constexpr std::array<BlockedFn, sizeof...(I)> blocked_row(std::index_sequence<I...>) {
  return {{&blocked_tile<int(I) + 1, NR, SW, SX>...}};
}
template <int SW, int SX>
struct BlockedTable {
  static constexpr auto t1 = blocked_row<1, SW, SX>(std::make_index_sequence<blocked_max_mr(1, SW)>{});
  static constexpr auto t2 = blocked_row<2, SW, SX>(std::make_index_sequence<blocked_max_mr(2, SW)>{});
  static constexpr auto t3 = blocked_row<3, SW, SX>(std::make_index_sequence<blocked_max_mr(3, SW)>{});
  static constexpr auto t4 = blocked_row<4, SW, SX>(std::make_index_sequence<blocked_max_mr(4, SW)>{});
  static BlockedFn get(int64_t mr, int64_t nr) {
    switch (nr) {
      case 1: return t1[mr - 1];
      case 2: return t2[mr - 1];
      case 3: return t3[mr - 1];
      default: return t4[mr - 1];
    }
  }
};

BlockedFn blocked_fn(int64_t mr, int64_t nr, int64_t sw_taps, int64_t sx) {
  if (sw_taps == 3) return BlockedTable<3, 1>::get(mr, nr);
  if (sw_taps == 2) return BlockedTable<2, 1>::get(mr, nr);
  if (sx == 2) return BlockedTable<1, 2>::get(mr, nr);
  return BlockedTable<1, 1>::get(mr, nr);
}

// Vector blocks [v0, v0 + nr) of an output channel range, with their packed-weight offsets.
struct VecBlock {
  int64_t v0, nr, off;
};

// Picks NR (output vectors per tile) for rows of npix pixels and nvec output vectors, by a simple
// per-input-channel cycle model: FMA throughput, load throughput and FMA latency.
std::vector<VecBlock> plan_vec_blocks(int64_t npix, int64_t nvec, int sw_taps) {
  double best = 1e300;
  int64_t best_nr = 1;
  for (int64_t nr = 1; nr <= std::min<int64_t>(4, nvec); ++nr) {
    const int64_t mr_max = blocked_max_mr(int(nr), sw_taps);
    double cycles = 0;
    for (int64_t v0 = 0; v0 < nvec; v0 += nr) {
      const int64_t nrb = std::min(nr, nvec - v0);
      for_each_tile(npix, mr_max, [&](int64_t, int64_t mr) {
        const double fma = 0.5 * double(mr * nrb * sw_taps);
        const double loads = 0.5 * double(mr + sw_taps - 1 + sw_taps * nrb);
        cycles += std::max({fma, loads, 4.0 * sw_taps}) + 1.0;
      });
    }
    if (cycles < best - 1e-9) best = cycles, best_nr = nr;
  }
  std::vector<VecBlock> blocks;
  for (int64_t v0 = 0; v0 < nvec; v0 += best_nr) blocks.push_back({v0, std::min(best_nr, nvec - v0), 0});
  return blocks;
}

// dst[cb][i][j][l] = img[ih0 + i][iw0 + j][16 * cb + l], zero outside the image; C = 16 * ncb.
void stage_rows_blocked(const float* img, int64_t H, int64_t W, int64_t ncb, int64_t ih0, int64_t ih1, int64_t iw0,
                        int64_t iw1, float* dst) {
  const int64_t C = 16 * ncb, ws = iw1 - iw0, plane = (ih1 - ih0) * ws * 16;
  for (int64_t ih = ih0; ih < ih1; ++ih) {
    for (int64_t iw = iw0; iw < iw1; ++iw) {
      float* d = dst + ((ih - ih0) * ws + (iw - iw0)) * 16;
      if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
        for (int64_t cb = 0; cb < ncb; ++cb) std::memset(d + cb * plane, 0, 16 * sizeof(float));
      } else {
        const float* s = img + (ih * W + iw) * C;
        for (int64_t cb = 0; cb < ncb; ++cb) std::memcpy(d + cb * plane, s + 16 * cb, 16 * sizeof(float));
      }
    }
  }
}

// Rewrites a.in / a.out per tile (by reference, as run_tiles).
void run_blocked_tiles(BlockedArgs& a, int64_t npix, int64_t in_ps, int64_t sw_taps, int64_t sx, int64_t nr) {
  const float* in = a.in;
  float* out = a.out;
  for_each_tile(npix, blocked_max_mr(int(nr), int(sw_taps)), [&](int64_t j0, int64_t mr) {
    a.in = in + j0 * in_ps;
    a.out = out + j0 * a.out_ps;
    blocked_fn(mr, nr, sw_taps, sx)(a);
  });
}

void forward_blocked(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  const int64_t N = g.N, C = g.C, H = g.H, W = g.W, K = g.K, R = g.R, S = g.S, G = g.groups;
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, pw = g.pad_w, dh = g.dil_h, dw = g.dil_w;
  const int64_t Kp = round_up(Kg, 16), kvec = Kp / 16, cbg = Cg / 16, cbt = C / 16;
  const int last_lanes = static_cast<int>(Kg - (kvec - 1) * 16);
  const int sw_taps = (sw == 1 && dw == 1 && (S == 2 || S == 3)) ? int(S) : 1;

  std::vector<VecBlock> blocks = plan_vec_blocks(Q, kvec, sw_taps);
  int64_t wg_size = 0;
  for (auto& blk : blocks) blk.off = wg_size, wg_size += R * Cg * S * blk.nr * 16;
  AlignedPtr wpk = aligned_floats(G * wg_size);
  for (int64_t gi = 0; gi < G; ++gi)
    for (const auto& blk : blocks) {
      float* dst = wpk.get() + gi * wg_size + blk.off;
      const int64_t nl = blk.nr * 16;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t s = 0; s < S; ++s)
            for (int64_t j = 0; j < nl; ++j) {
              const int64_t k = blk.v0 * 16 + j;
              dst[((r * Cg + c) * S + s) * nl + j] = k < Kg ? w[(((gi * Kg + k) * R + r) * S + s) * Cg + c] : 0.0f;
            }
    }
  std::vector<float> bpk;
  if (b) {
    bpk.assign(G * Kp, 0.0f);
    for (int64_t gi = 0; gi < G; ++gi)
      for (int64_t k = 0; k < Kg; ++k) bpk[gi * Kp + k] = b[gi * Kg + k];
  }

  const int64_t Wst = (Q - 1) * sw + (S - 1) * dw + 1;  // staged columns, starting at iw = -pw
  const int64_t rpt = rows_per_task(N, P);
  const int64_t nblk = ceil_div(P, rpt);

  parallel_for(0, N * nblk, 1, [&](int64_t lo, int64_t hi) {
    std::vector<Tap> taps(R * S);
    for (int64_t u = lo; u < hi; ++u) {
      const int64_t n = u / nblk, p0 = (u % nblk) * rpt, p1 = std::min(P, p0 + rpt);
      const int64_t ih0 = std::max<int64_t>(0, p0 * sh - ph);
      const int64_t ih1 = std::max(ih0, std::min(H, (p1 - 1) * sh - ph + (R - 1) * dh + 1));
      const int64_t plane = (ih1 - ih0) * Wst * 16;
      float* buf = stage_buffer(cbt * plane);
      stage_rows_blocked(x + n * H * W * C, H, W, cbt, ih0, ih1, -pw, Wst - pw, buf);
      for (int64_t p = p0; p < p1; ++p) {
        for (const auto& blk : blocks) {
          const int64_t nl = blk.nr * 16;
          int64_t nt = 0;
          for (int64_t r = 0; r < R; ++r) {
            const int64_t ih = p * sh - ph + r * dh;
            if (ih < 0 || ih >= H) continue;
            const int64_t roff = (ih - ih0) * Wst * 16;
            if (sw_taps > 1) {
              taps[nt++] = {roff, r * Cg * S * nl};
            } else {
              for (int64_t s = 0; s < S; ++s) taps[nt++] = {roff + s * dw * 16, r * Cg * S * nl + s * nl};
            }
          }
          for (int64_t gi = 0; gi < G; ++gi) {
            BlockedArgs a{};
            a.in = buf + gi * cbg * plane;
            a.taps = taps.data();
            a.ntaps = nt;
            a.ncb = cbg;
            a.in_cb = plane;
            a.w = wpk.get() + gi * wg_size + blk.off;
            a.w_c = S * nl;
            a.w_cb = 16 * S * nl;
            a.out = y + (n * P + p) * Q * K + gi * Kg + blk.v0 * 16;
            a.out_ps = K;
            a.bias = b ? bpk.data() + gi * Kp + blk.v0 * 16 : nullptr;
            a.last_lanes = blk.v0 + blk.nr == kvec ? last_lanes : 16;
            run_blocked_tiles(a, Q, 16 * sw, sw_taps, sw, blk.nr);
          }
        }
      }
    }
  });
}

void backward_data_blocked(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  const int64_t N = g.N, C = g.C, H = g.H, W = g.W, K = g.K, R = g.R, S = g.S, G = g.groups;
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, pw = g.pad_w, dh = g.dil_h, dw = g.dil_w;
  const int64_t Cp = round_up(Cg, 16), cvec = Cp / 16, kbg = Kg / 16, kbt = K / 16;
  const int last_lanes = static_cast<int>(Cg - (cvec - 1) * 16);

  // Column phases: dx columns w = phase + j * sw read dy columns q0(s) + j for the kernel columns s
  // with (phase + pw - s * dw) divisible by sw, listed by increasing q0 (decreasing s).
  struct Phase {
    std::vector<int64_t> s, q0;
    int sw_taps = 1;
    std::vector<VecBlock> blocks;
    int64_t off = 0, size = 0;  // packed weights of all groups
  };
  const int64_t nphase = std::min(sw, W);
  std::vector<Phase> phases(nphase);
  int64_t total = 0;
  for (int64_t f = 0; f < nphase; ++f) {
    Phase& ph_ = phases[f];
    for (int64_t s = S - 1; s >= 0; --s) {
      const int64_t u = f + pw - s * dw;
      if (((u % sw) + sw) % sw == 0) ph_.s.push_back(s), ph_.q0.push_back(floor_div(u, sw));
    }
    const int64_t ns = static_cast<int64_t>(ph_.s.size());
    bool consecutive = ns >= 2 && ns <= 3;
    for (int64_t i = 1; i < ns; ++i) consecutive = consecutive && ph_.q0[i] == ph_.q0[i - 1] + 1;
    ph_.sw_taps = consecutive ? int(ns) : 1;
    ph_.blocks = plan_vec_blocks(ceil_div(W - f, sw), cvec, ph_.sw_taps);
    int64_t per_group = 0;
    for (auto& blk : ph_.blocks) blk.off = per_group, per_group += R * Kg * std::max<int64_t>(ns, 1) * blk.nr * 16;
    ph_.off = total;
    ph_.size = per_group;
    total += G * per_group;
  }
  AlignedPtr wpk = aligned_floats(total);
  for (const Phase& f : phases) {
    const int64_t ns = static_cast<int64_t>(f.s.size());
    for (int64_t gi = 0; gi < G; ++gi)
      for (const auto& blk : f.blocks) {
        float* dst = wpk.get() + f.off + gi * f.size + blk.off;
        const int64_t nl = blk.nr * 16;
        for (int64_t r = 0; r < R; ++r)
          for (int64_t k = 0; k < Kg; ++k)
            for (int64_t i = 0; i < ns; ++i)
              for (int64_t j = 0; j < nl; ++j) {
                const int64_t c = blk.v0 * 16 + j;
                dst[((r * Kg + k) * ns + i) * nl + j] =
                    c < Cg ? w[(((gi * Kg + k) * R + r) * S + f.s[i]) * Cg + c] : 0.0f;
              }
      }
  }

  const int64_t qmin = floor_div(pw - (S - 1) * dw, sw), qmax = floor_div(W - 1 + pw, sw);
  const int64_t Qst = qmax - qmin + 1;
  const int64_t rpt = rows_per_task(N, H);
  const int64_t nblk = ceil_div(H, rpt);

  parallel_for(0, N * nblk, 1, [&](int64_t lo, int64_t hi) {
    std::vector<Tap> taps(R * S);
    for (int64_t u = lo; u < hi; ++u) {
      const int64_t n = u / nblk, h0 = (u % nblk) * rpt, h1 = std::min(H, h0 + rpt);
      const int64_t p0 = std::max<int64_t>(0, ceil_div(std::max<int64_t>(0, h0 + ph - (R - 1) * dh), sh));
      const int64_t p1 = std::max(p0, std::min(P, floor_div(h1 - 1 + ph, sh) + 1));
      const int64_t plane = (p1 - p0) * Qst * 16;
      float* buf = stage_buffer(kbt * plane);
      stage_rows_blocked(dy + n * P * Q * K, P, Q, kbt, p0, p1, qmin, qmax + 1, buf);
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t fi = 0; fi < nphase; ++fi) {
          const Phase& f = phases[fi];
          const int64_t ns = static_cast<int64_t>(f.s.size());
          for (const auto& blk : f.blocks) {
            const int64_t nl = blk.nr * 16;
            int64_t nt = 0;
            for (int64_t r = 0; r < R && ns > 0; ++r) {
              const int64_t t = h + ph - r * dh;
              if (t < 0 || t % sh != 0 || t / sh >= P) continue;
              const int64_t roff = (t / sh - p0) * Qst * 16;
              if (f.sw_taps > 1) {
                taps[nt++] = {roff + (f.q0[0] - qmin) * 16, r * Kg * ns * nl};
              } else {
                for (int64_t i = 0; i < ns; ++i) taps[nt++] = {roff + (f.q0[i] - qmin) * 16, r * Kg * ns * nl + i * nl};
              }
            }
            for (int64_t gi = 0; gi < G; ++gi) {
              BlockedArgs a{};
              a.in = buf + gi * kbg * plane;
              a.taps = taps.data();
              a.ntaps = nt;
              a.ncb = kbg;
              a.in_cb = plane;
              a.w = wpk.get() + f.off + gi * f.size + blk.off;
              a.w_c = std::max<int64_t>(ns, 1) * nl;
              a.w_cb = 16 * a.w_c;
              a.out = dx + ((n * H + h) * W + fi) * C + gi * Cg + blk.v0 * 16;
              a.out_ps = sw * C;
              a.bias = nullptr;
              a.last_lanes = blk.v0 + blk.nr == cvec ? last_lanes : 16;
              run_blocked_tiles(a, ceil_div(W - fi, sw), 16, f.sw_taps, 1, blk.nr);
            }
          }
        }
      }
    }
  });
}

// 1x1, stride 1, no padding, one group, small images (<= 8x8): the convolution is one GEMM over all
// N*H*W pixels, and the GEMM's cache blocking beats pixel tiles of at most 16 pixels per row that
// stream the whole (large) weight matrix each.
bool pointwise_gemm(const Conv2dGeometry& g) {
  return g.R == 1 && g.S == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0 && g.groups == 1 &&
         g.H * g.W <= 64;
}

}  // namespace

bool conv_direct_available() { return cpu_has_avx512(); }

void conv2d_forward_direct(const Conv2dGeometry& g, const float* x, const float* w, const float* b, float* y) {
  if (pointwise_gemm(g)) {
    // y[N*H*W][K] = x[N*H*W][C] w^T, then + b.
    GemmArgs<float> a;
    a.trans_b = true;
    a.M = g.N * g.H * g.W, a.N = g.K, a.K = g.C;
    a.A = x, a.lda = g.C;
    a.B = w, a.ldb = g.C;
    a.C = y, a.ldc = g.K;
    gemm(a);
    if (b)
      parallel_for(0, a.M, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i)
          for (int64_t k = 0; k < g.K; ++k) y[i * g.K + k] += b[k];
      });
    return;
  }
  const bool strided_1x1 = g.R == 1 && g.S == 1 && g.pad_h == 0 && g.pad_w == 0 && (g.stride_h > 1 || g.stride_w > 1);
  if (g.C_per_group() % 16 == 0 && g.stride_w <= 2 && !strided_1x1)
    forward_blocked(g, x, w, b, y);
  else
    forward_nhwc(g, x, w, b, y);
}

void conv2d_backward_data_direct(const Conv2dGeometry& g, const float* dy, const float* w, float* dx) {
  if (pointwise_gemm(g)) {
    // dx[N*H*W][C] = dy[N*H*W][K] w[K][C].
    GemmArgs<float> a;
    a.M = g.N * g.H * g.W, a.N = g.C, a.K = g.K;
    a.A = dy, a.lda = g.K;
    a.B = w, a.ldb = g.C;
    a.C = dx, a.ldc = g.C;
    gemm(a);
    return;
  }
  if (g.R == 1 && g.S == 1 && g.groups == 1 && g.pad_h == 0 && g.pad_w == 0 && (g.stride_h > 1 || g.stride_w > 1))
    backward_data_1x1_strided(g, dy, w, dx);
  else if (g.K_per_group() % 16 == 0)
    backward_data_blocked(g, dy, w, dx);
  else
    backward_data_nhwc(g, dy, w, dx);
}

// ------------------------------------------------------------------------------------------------
// Backward weight
// ------------------------------------------------------------------------------------------------

namespace {

// Small-patch backward-weight kernel (groups 1, unit column dilation, R*S*C <= 27: a first conv on
// RGB or grey input). The general wgrad tile vectorises along the S*C lanes of one kernel row, which
// leaves most lanes masked off when C is small; this one vectorises along 16 output channels instead
// and keeps the whole R x S x C patch (one accumulator per patch element) in registers: per output
// pixel, one dy vector load and R*S*C FMAs with broadcast input values, every tap in one pass.
//   x     staged padded rows: x[row * x_rs + q * x_ps + r * x_tap_rs + s * C + c] is the input of
//         output pixel (row, q) under tap (r, s), channel c
//   dy    dy[row * dy_rs + q * dy_ps + j] for the block's output channel k0 + j, j < lanes
//   dw    dw[j * ldd + (r * S + s) * C + c], written (or added to, when accumulate)
struct SmallWgradArgs {
  const float* x;
  int64_t x_ps, x_rs, x_tap_rs;
  const float* dy;
  int64_t dy_ps, dy_rs;
  int64_t rows, cols;
  float* dw;
  int64_t ldd;
  bool accumulate;
  int lanes;
};

template <int R, int SC>
LOWBIT_AVX512 void wgrad_small_tile(const SmallWgradArgs& a) {
  constexpr int L = R * SC;
  alignas(64) float tmp[L][16];
  const __mmask16 mask = static_cast<__mmask16>((1u << a.lanes) - 1u);
  __m512 acc[L];
  if (a.accumulate) {
    for (int l = 0; l < L; ++l)
      for (int j = 0; j < 16; ++j) tmp[l][j] = j < a.lanes ? a.dw[j * a.ldd + l] : 0.0f;
#pragma GCC unroll 28
    for (int l = 0; l < L; ++l) acc[l] = _mm512_load_ps(tmp[l]);
  } else {
#pragma GCC unroll 28
    for (int l = 0; l < L; ++l) acc[l] = _mm512_setzero_ps();
  }
  const int64_t trs = a.x_tap_rs;
  for (int64_t row = 0; row < a.rows; ++row) {
    const float* xp = a.x + row * a.x_rs;
    const float* dp = a.dy + row * a.dy_rs;
    for (int64_t q = 0; q < a.cols; ++q, xp += a.x_ps, dp += a.dy_ps) {
      const __m512 d = _mm512_maskz_loadu_ps(mask, dp);
#pragma GCC unroll 7
      for (int r = 0; r < R; ++r) {
        const float* xr = xp + r * trs;
#pragma GCC unroll 28
        for (int i = 0; i < SC; ++i) acc[r * SC + i] = _mm512_fmadd_ps(_mm512_set1_ps(xr[i]), d, acc[r * SC + i]);
      }
    }
  }
#pragma GCC unroll 28
  for (int l = 0; l < L; ++l) _mm512_store_ps(tmp[l], acc[l]);
  for (int j = 0; j < a.lanes; ++j)
    for (int l = 0; l < L; ++l) a.dw[j * a.ldd + l] = tmp[l][j];
}

using SmallWgradFn = void (*)(const SmallWgradArgs&);

// acc[k] = sum over rows i (in order) of dy[i * K + k]: 64 channels at a time in registers.
LOWBIT_AVX512 void bias_grad_rows(const float* dy, int64_t rows, int64_t K, float* acc) {
  for (int64_t k0 = 0; k0 < K; k0 += 64) {
    __mmask16 m[4];
    __m512 s[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t n = std::clamp<int64_t>(K - k0 - 16 * v, 0, 16);
      m[v] = static_cast<__mmask16>((1u << n) - 1u);
      s[v] = _mm512_setzero_ps();
    }
    const float* d = dy + k0;
    for (int64_t i = 0; i < rows; ++i, d += K)
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) s[v] = _mm512_add_ps(s[v], _mm512_maskz_loadu_ps(m[v], d + 16 * v));
    for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(acc + k0 + 16 * v, m[v], s[v]);
  }
}

// Instantiated shapes: 3x3 on 1-3 channels, 5x5 on 1 channel; null when not covered.
SmallWgradFn small_wgrad_fn(int64_t R, int64_t S, int64_t C) {
  if (R == 3 && S == 3 && C == 3) return &wgrad_small_tile<3, 9>;
  if (R == 3 && S == 3 && C == 2) return &wgrad_small_tile<3, 6>;
  if (R == 3 && S == 3 && C == 1) return &wgrad_small_tile<3, 3>;
  if (R == 5 && S == 5 && C == 1) return &wgrad_small_tile<5, 5>;
  return nullptr;
}

}  // namespace

void conv2d_backward_weight_direct(const Conv2dGeometry& g, const float* x, const float* dy, float* dwt, float* db) {
  const int64_t N = g.N, C = g.C, H = g.H, W = g.W, K = g.K, R = g.R, S = g.S, G = g.groups;
  const int64_t P = g.P(), Q = g.Q(), Cg = g.C_per_group(), Kg = g.K_per_group();
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, pw = g.pad_w, dh = g.dil_h, dw = g.dil_w;
  const int64_t dw_size = K * R * S * Cg;

  // Taps: (staged row offset in kernel rows, staged column, dw offset); each a run of L lanes.
  struct WTap {
    int64_t r, col, dw_off;
  };
  const bool merged = G == 1 && dw == 1;
  const int64_t L = merged ? S * C : Cg;
  std::vector<WTap> taps;
  for (int64_t r = 0; r < R; ++r) {
    if (merged) {
      taps.push_back({r * dh, 0, r * S * Cg});
    } else {
      for (int64_t s = 0; s < S; ++s) taps.push_back({r * dh, s * dw, (r * S + s) * Cg});
    }
  }
  const int64_t lvec = ceil_div(L, 16);
  const int64_t nr_max = std::min<int64_t>(lvec, 3);
  const int64_t mr_max = kWgradMaxMR[nr_max];
  const SmallWgradFn small = G == 1 && dw == 1 ? small_wgrad_fn(R, S, C) : nullptr;
  // Output tiles: (group, k tile, tap, lane block); small-patch kernel: one per 16 output channels.
  struct OTile {
    int64_t gi, k0, mr, t, v0, nr;
  };
  std::vector<OTile> otiles;
  if (small)
    for (int64_t k0 = 0; k0 < K; k0 += 16) otiles.push_back({0, k0, std::min<int64_t>(16, K - k0), 0, 0, 0});
  for (int64_t gi = 0; gi < G && !small; ++gi)
    for_each_tile(Kg, mr_max, [&](int64_t k0, int64_t mr) {
      for (int64_t t = 0; t < static_cast<int64_t>(taps.size()); ++t)
        for (int64_t v0 = 0; v0 < lvec; v0 += nr_max)
          otiles.push_back({gi, k0, mr, t, v0, std::min(nr_max, lvec - v0)});
    });

  const int64_t Wst = (Q - 1) * sw + (S - 1) * dw + 1;
  // Without padding every tap reads inside the image: x is read in place, no staging copy.
  const bool in_place = ph == 0 && pw == 0;
  const int64_t xrow = in_place ? W * C : Wst * C;
  // Rows of one staged slice: about 512 KiB of staged x + dy, within one image.
  const int64_t row_bytes = sizeof(float) * (sh * xrow + Q * K);
  const int64_t slice_rows = std::clamp<int64_t>((512 << 10) / row_bytes, 1, P);
  auto slice_x_rows = [&](int64_t rows) { return (rows - 1) * sh + (R - 1) * dh + 1; };

  // Batch chunks: fixed by the shape only; partial dw per chunk (chunk 0 writes dw itself).
  const int64_t units = N * P;
  int64_t nchunks = std::clamp<int64_t>(N * P * Q / 1024, 1, 16);
  nchunks = std::min(nchunks, std::max<int64_t>(1, (int64_t(1) << 20) / dw_size));
  nchunks = std::min(nchunks, units);

  // Runs every output tile `ti` in [t_lo, t_hi) over rows [p0, p1) of image n, staged in xs.
  auto run_slice = [&](const float* xs, int64_t n, int64_t p0, int64_t p1, float* dst, bool accumulate, int64_t t_lo,
                       int64_t t_hi) {
    for (int64_t ti = t_lo; ti < t_hi && small; ++ti) {
      const OTile& o = otiles[ti];
      SmallWgradArgs a{};
      a.x = xs;
      a.x_ps = sw * C;
      a.x_rs = sh * xrow;
      a.x_tap_rs = dh * xrow;
      a.dy = dy + (n * P + p0) * Q * K + o.k0;
      a.dy_ps = K;
      a.dy_rs = Q * K;
      a.rows = p1 - p0;
      a.cols = Q;
      a.dw = dst + o.k0 * R * S * C;
      a.ldd = R * S * C;
      a.accumulate = accumulate;
      a.lanes = static_cast<int>(o.mr);
      small(a);
    }
    for (int64_t ti = t_lo; ti < t_hi && !small; ++ti) {
      const OTile& o = otiles[ti];
      const WTap& tp = taps[o.t];
      WgradArgs a{};
      a.x = xs + tp.r * xrow + tp.col * C + o.gi * Cg + 16 * o.v0;
      a.x_ps = sw * C;
      a.x_rs = sh * xrow;
      a.dy = dy + (n * P + p0) * Q * K + o.gi * Kg + o.k0;
      a.dy_ps = K;
      a.dy_rs = Q * K;
      a.rows = p1 - p0;
      a.cols = Q;
      a.dw = dst + (o.gi * Kg + o.k0) * R * S * Cg + tp.dw_off + 16 * o.v0;
      a.ldd = R * S * Cg;
      a.accumulate = accumulate;
      a.last_lanes = o.v0 + o.nr == lvec ? static_cast<int>(L - (lvec - 1) * 16) : 16;
      wgrad_fn(o.mr, o.nr)(a);
    }
  };
  auto stage_slice = [&](float* buf, int64_t n, int64_t p0, int64_t p1) {
    const int64_t ih0 = p0 * sh - ph;
    stage_rows(x + n * H * W * C, H, W, C, ih0, ih0 + slice_x_rows(p1 - p0), -pw, Wst - pw, buf);
  };
  // Visits the slices (n, p0, p1) of rows [u0, u1) in order.
  auto for_each_slice = [&](int64_t u0, int64_t u1, auto&& fn) {
    for (int64_t u = u0; u < u1;) {
      const int64_t n = u / P, p0 = u % P, p1 = std::min({P, p0 + slice_rows, p0 + (u1 - u)});
      fn(n, p0, p1);
      u += p1 - p0;
    }
  };
  const int64_t ntiles = static_cast<int64_t>(otiles.size());

  std::vector<float> partial;
  std::vector<float> db_partial(db ? nchunks * K : 0);
  if (pointwise_gemm(g)) {
    // dw[K][C] = dy^T x over all N*P*Q pixels (the GEMM's K blocking depends on the shape alone).
    GemmArgs<float> a;
    a.trans_a = true;
    a.M = K, a.N = C, a.K = N * P * Q;
    a.A = dy, a.lda = K;
    a.B = x, a.ldb = C;
    a.C = dwt, a.ldc = C;
    gemm(a);
  } else if (nchunks == 1) {
    std::vector<float> xs(in_place ? 0 : slice_x_rows(slice_rows) * xrow + 16);
    bool first = true;
    for_each_slice(0, units, [&](int64_t n, int64_t p0, int64_t p1) {
      const float* src = in_place ? x + (n * H + p0 * sh) * xrow : xs.data();
      if (!in_place) stage_slice(xs.data(), n, p0, p1);
      parallel_for(0, ntiles, 1, [&](int64_t lo, int64_t hi) { run_slice(src, n, p0, p1, dwt, !first, lo, hi); });
      first = false;
    });
  } else {
    partial.resize((nchunks - 1) * dw_size);
    parallel_chunks(0, units, nchunks, [&](int64_t c, int64_t u0, int64_t u1) {
      float* dst = c == 0 ? dwt : partial.data() + (c - 1) * dw_size;
      float* xs = in_place ? nullptr : stage_buffer(slice_x_rows(slice_rows) * xrow);
      bool first = true;
      for_each_slice(u0, u1, [&](int64_t n, int64_t p0, int64_t p1) {
        const float* src = in_place ? x + (n * H + p0 * sh) * xrow : xs;
        if (!in_place) stage_slice(xs, n, p0, p1);
        run_slice(src, n, p0, p1, dst, !first, 0, ntiles);
        first = false;
      });
    });
    parallel_for(0, dw_size, 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t c = 1; c < nchunks; ++c) {
        const float* src = partial.data() + (c - 1) * dw_size;
        for (int64_t i = lo; i < hi; ++i) dwt[i] += src[i];
      }
    });
  }
  if (db) {
    // Per-chunk sums over rows, combined in chunk order.
    parallel_chunks(0, units, nchunks, [&](int64_t c, int64_t u0, int64_t u1) {
      bias_grad_rows(dy + u0 * Q * K, (u1 - u0) * Q, K, db_partial.data() + c * K);
    });
    for (int64_t k = 0; k < K; ++k) {
      float s = 0.0f;
      for (int64_t c = 0; c < nchunks; ++c) s += db_partial[c * K + k];
      db[k] = s;
    }
  }
}

}  // namespace lowbit::kernels
