// Exact integer Winograd F(2x2, 3x3) convolution (contract: core/kernels/conv_int8_winograd.h).
//
// Layout. The tiles' 4x4 patches lie in x with the zero point around it, [N][Hp][Wp][C'] (C' = C
// rounded up to 4, the added channels 0; Hp = 2 TH + 2, Wp = 2 TW' + 2 for TH x TW tiles, TW' = TW
// rounded up to 4): the AVX-512 input transforms read x itself where C' = C (16 or 32 channels: with
// padding 1 and W a multiple of 64 / C', by loads aligned with x's rows; other C' by masked loads; the
// zero point outside), the others a padded copy. Tile t of a block of tile rows is row
// t of V (a tile row holds TW' rows; the ones past TW are computed and dropped). Per block:
//   V  [16][T][C'] uint8   V + o_pos of every tile, per position (rows C' bytes)
// then, by path:
//   lanes (VNNI, C' = 16 or 32, T % 16 == 0): V regrouped per 16 tiles as [quad][tile lane]; vpdpbusd with
//          the tiles in the lanes and each weight quad broadcast from memory (one instruction per
//          64 MACs), the output transform on the registers (most of it in the accumulation), a
//          16x16 transpose back to [pixel][K] (of int32, or of the requantized bytes; with K = 16 and
//          whole tile rows, 64-byte runs of pixels: lane_store_u8_rows). For ResNet-20's shapes (16
//          channels on 32-pixel rows, 32 on 16-pixel rows, padding 1) the input transform writes that
//          regrouped V itself, from rows of x staged as quads (input_rows_lanes16/32_avx512): no V in
//          tile order and no regrouping (2026-12-05: +7 % engine with the 64-byte stores above);
//   fused (VNNI, other C' <= 32): per 3 tiles and 16 output channels, the 16 products in registers (V
//          broadcast, weights as vectors) and the output transform on them, straight into y;
//   GEMMs (C' > 32, or portable): 16 int8 GEMMs (gemm_int8.h's kernels) into
//   M  [16][T][K]  int32   sum_c clamp(U') (V + o), then + the clamped entries' excess terms,
//          and the output transform from memory.
// Every path ends in y [rows][K] int32 = (A^T M A - compensation) / 4 (an exact arithmetic shift).
// Measured (one thread, 10 images, ResNet-20 layers with the requantization fused, against
// conv2d_u8s8u8, quiet machine): 16 channels on 32x32 1.09x (lanes; fused 1.03-1.07x, GEMMs 0.6x);
// 32 on 16x16 1.0-1.1x (fused; GEMMs 0.8x); 64 on 8x8 1.7-1.9x (GEMMs; fused 1.4x: the GEMMs
// broadcast each V quad once per 4 vpdpbusd). Later (2026-12-05, the engine's per-layer profile on a
// trained 4-bit ResNet-20, batch 128): the lanes kernel with 4 channels per call and the
// requantization in its registers took the 16-channel layers' kernel share from 25.5 to 24.6 % of
// the engine's samples, and on the 32-channel layers ran 3-5 % faster than the fused kernel.
// With C' = 16 or 32 the AVX-512 input transform handles 4 or 2 tiles per 64-byte vector (two 64-byte
// loads and a 128-bit-lane shuffle per patch column). V is computed modulo 256 in byte lanes: exact,
// since V + o is in [0, 255].
#include "core/kernels/conv_int8_winograd.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/kernels/cpu.h"
#include "core/kernels/requant_f32.h"
#include "core/parallel.h"

namespace lowbit::kernels {
namespace {

constexpr int kG2[4][3] = {{2, 0, 0}, {1, 1, 1}, {1, -1, 1}, {0, 0, 2}};
constexpr int kBT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
constexpr int kAT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
constexpr int kCentre = 5;  // position (1, 1): V in [0, 4M], no offset

// U'[pos] = (G2 g G2^T)[pos / 4][pos % 4] for the 3x3 filter g[r][s] = w[(r 3 + s) C].
void weight_transform(const int8_t* w, int64_t C, int64_t u[16]) {
  int64_t t[4][3];  // G2 g
  for (int i = 0; i < 4; ++i)
    for (int s = 0; s < 3; ++s) {
      t[i][s] = 0;
      for (int r = 0; r < 3; ++r) t[i][s] += kG2[i][r] * int64_t(w[(r * 3 + s) * C]);
    }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      u[i * 4 + j] = 0;
      for (int s = 0; s < 3; ++s) u[i * 4 + j] += t[i][s] * kG2[j][s];
    }
}

// v = B^T d B.
template <class T>
void input_transform(const T d[4][4], T v[4][4]) {
  T t[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      t[i][j] = 0;
      for (int a = 0; a < 4; ++a) t[i][j] += kBT[i][a] * d[a][j];
    }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      v[i][j] = 0;
      for (int b = 0; b < 4; ++b) v[i][j] += t[i][b] * kBT[j][b];
    }
}

// y[dp][dq] = (A^T m A)[dp][dq].
inline void output_transform(const int64_t m[16], int64_t y[4]) {
  for (int dp = 0; dp < 2; ++dp)
    for (int dq = 0; dq < 2; ++dq) {
      int64_t s = 0;
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) s += kAT[dp][a] * kAT[dq][b] * m[a * 4 + b];
      y[dp * 2 + dq] = s;
    }
}

void check_geometry(const Conv2dGeometry& g, const char* op) {
  LOWBIT_CHECK(g.N >= 0 && g.C >= 1 && g.H >= 1 && g.W >= 1 && g.K >= 1 && g.pad_h >= 0 && g.pad_w >= 0, op,
               ": invalid geometry");
  LOWBIT_CHECK(conv_winograd_geometry(g), op, ": needs a 3x3 kernel, stride 1, dilation 1, groups 1");
  LOWBIT_CHECK(g.P() >= 1 && g.Q() >= 1, op, ": empty output (P=", g.P(), ", Q=", g.Q(), ")");
}

struct Tiling {
  int64_t P, Q, TH, TW, TWp, Hp, Wp, cp;
  explicit Tiling(const Conv2dGeometry& g)
      : P(g.P()),
        Q(g.Q()),
        TH((P + 1) / 2),
        TW((Q + 1) / 2),
        TWp((TW + 3) / 4 * 4),
        Hp(2 * TH + 2),
        Wp(2 * TWp + 2),
        cp((g.C + 3) / 4 * 4) {}
};

// This thread's block buffers (64-byte aligned, grown on demand).
uint8_t* block_scratch(int64_t bytes) {
  thread_local std::vector<uint8_t, Aligned64Allocator<uint8_t>> buf;
  if (int64_t(buf.size()) < bytes) buf.resize(size_t(bytes));
  return buf.data();
}

int64_t round64(int64_t n) { return (n + 63) / 64 * 64; }

std::atomic<bool> g_fused{true};  // set_winograd_fused_vnni
bool fused_enabled() { return g_fused.load(std::memory_order_relaxed); }

// ---------------------------------------------------------------------------------------------
// Input transform of one tile row: tiles [0, tiles) into v + t cp (positions `vstride` bytes apart).
// o2 = 2M, the offset of every position but the centre. The portable path reads the padded copy, the
// AVX-512 paths either the padded copy or x itself (the zero point outside it; a missing row is the
// zero point), the rows then given as PatchRows.
// ---------------------------------------------------------------------------------------------

// The 4 input rows of a tile row: row[i] = the address of patch column 0 of patch row i (pixels cp
// bytes apart; 0: a row of the zero point), where only patch columns [lo, hi) are pixels; the others
// are the zero point. The addresses are integers: patch column 0 may lie before the row's first pixel.
struct PatchRows {
  uintptr_t row[4] = {};
  int64_t lo = 0, hi = INT64_MAX;
  uint8_t zp = 0;
};

void input_row_portable(const uint8_t* xp, int64_t Wp, int64_t cp, int64_t tiles, int32_t o2, uint8_t* v,
                        int64_t vstride) {
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t c = 0; c < cp; ++c) {
      int32_t d[4][4], e[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) d[i][j] = xp[(i * Wp + 2 * t + j) * cp + c];
      input_transform(d, e);
      for (int pos = 0; pos < 16; ++pos)
        v[pos * vstride + t * cp + c] = uint8_t(e[pos / 4][pos % 4] + (pos == kCentre ? 0 : o2));
    }
}

// B^T d B + o in byte lanes (modulo 256), stored masked at v + pos vstride.
LOWBIT_AVX512 inline void transform_store(const __m512i d[4][4], __m512i o2, __mmask64 mask, uint8_t* v,
                                          int64_t vstride) {
  __m512i t[4][4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    t[0][j] = _mm512_sub_epi8(d[0][j], d[2][j]);
    t[1][j] = _mm512_add_epi8(d[1][j], d[2][j]);
    t[2][j] = _mm512_sub_epi8(d[2][j], d[1][j]);
    t[3][j] = _mm512_sub_epi8(d[1][j], d[3][j]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512i e[4] = {_mm512_sub_epi8(t[i][0], t[i][2]), _mm512_add_epi8(t[i][1], t[i][2]),
                          _mm512_sub_epi8(t[i][2], t[i][1]), _mm512_sub_epi8(t[i][1], t[i][3])};
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512i r = i * 4 + j == kCentre ? e[j] : _mm512_add_epi8(e[j], o2);
      _mm512_mask_storeu_epi8(v + (i * 4 + j) * vstride, mask, r);
    }
  }
}

// The all-ones maskz forms below sidestep a GCC 12 -Wmaybe-uninitialized false positive in the
// unmasked intrinsics (as core/kernels/requant.cpp); the same instructions.
constexpr __mmask8 kAll8 = 0xFF;

// Per 128-bit lane, the 4x4 dword transpose of g[0..3]: dword c of lane B of out[r] = dword r of
// lane B of g[c] (an involution).
LOWBIT_AVX512 inline __attribute__((always_inline)) void transpose4x4_dwords(const __m512i g[4], __m512i out[4]) {
  const __m512i t0 = _mm512_maskz_unpacklo_epi32(0xFFFF, g[0], g[1]),
                t1 = _mm512_maskz_unpackhi_epi32(0xFFFF, g[0], g[1]);
  const __m512i t2 = _mm512_maskz_unpacklo_epi32(0xFFFF, g[2], g[3]),
                t3 = _mm512_maskz_unpackhi_epi32(0xFFFF, g[2], g[3]);
  out[0] = _mm512_maskz_unpacklo_epi64(kAll8, t0, t2);
  out[1] = _mm512_maskz_unpackhi_epi64(kAll8, t0, t2);
  out[2] = _mm512_maskz_unpacklo_epi64(kAll8, t1, t3);
  out[3] = _mm512_maskz_unpackhi_epi64(kAll8, t1, t3);
}

// cp == 16 or 32, from x itself with pad_w 1 and W a multiple of 64 / cp (rows_aligned): 64 / cp tiles
// per step, the loads aligned with x's rows (64 / cp pixels each, none split across cache lines: the
// patches start one pixel before them), each used for two steps. Step s (64 / cp tiles; its patch columns from x's
// pixel 2 s (64 / cp) - 1 on): columns 1 and 2 are x's even and odd pixels of the step (a 128-bit-lane shuffle of two
// loads each), column 0 the previous step's column 2 moved up one pixel, column 3 the next step's column 1 moved down
// one.
template <int CP>
LOWBIT_AVX512 void input_row_aligned_avx512(const PatchRows& r, int64_t tiles, int32_t o2, uint8_t* v,
                                            int64_t vstride) {
  static_assert(CP == 16 || CP == 32);
  constexpr int kPix = 64 / CP;  // pixels per load, tiles per step
  constexpr int kEven = CP == 16 ? 0x88 : 0x44, kOdd = CP == 16 ? 0xDD : 0xEE;
  constexpr int kPixQ = CP / 8;  // qwords per pixel
  const __m512i o = _mm512_set1_epi8(char(o2)), z = _mm512_set1_epi8(char(r.zp));
  const int64_t loads = (r.hi - r.lo) / kPix;  // per row of x
  auto load = [&](int i, int64_t k) {          // x's pixels kPix k.. of patch row i (patch column kPix k + 1)
    return r.row[i] && k >= 0 && k < loads
               ? _mm512_loadu_si512(reinterpret_cast<const void*>(r.row[i] + uintptr_t((kPix * k + 1) * CP)))
               : z;
  };
  __m512i even[4], odd[4], odd_prev[4];  // columns 1 and 2 of the current step, column 2 of the previous
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512i a = load(i, 0), b = load(i, 1);
    even[i] = _mm512_maskz_shuffle_i64x2(kAll8, a, b, kEven);
    odd[i] = _mm512_maskz_shuffle_i64x2(kAll8, a, b, kOdd);
    odd_prev[i] = z;
  }
  for (int64_t t = 0; t < tiles; t += kPix) {
    const int64_t s = t / kPix;
    __m512i d[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m512i a = load(i, 2 * s + 2), b = load(i, 2 * s + 3);
      const __m512i even_next = _mm512_maskz_shuffle_i64x2(kAll8, a, b, kEven),
                    odd_next = _mm512_maskz_shuffle_i64x2(kAll8, a, b, kOdd);
      d[i][0] = _mm512_maskz_alignr_epi64(kAll8, odd[i], odd_prev[i], 8 - kPixQ);  // odd pixels, one earlier
      d[i][1] = even[i];
      d[i][2] = odd[i];
      d[i][3] = _mm512_maskz_alignr_epi64(kAll8, even_next, even[i], kPixQ);  // even pixels, one later
      odd_prev[i] = odd[i], even[i] = even_next, odd[i] = odd_next;
    }
    transform_store(d, o, ~__mmask64(0), v + t * CP, vstride);
  }
}

// The vpermt2d indices of the direct lanes inputs below: patch column j, lane L (tile t = lane_of(L) =
// 4 (L % 4) + L / 4 of the group): where the tile's pixel 2 t' - 1 + j lies in the two source vectors
// (clamped into x; `inside`: the lanes where it is in x).
struct LanesIndex {
  alignas(64) int32_t idx[4][16] = {};
  __mmask16 inside[4] = {};
};
// 16 channels: one tile row of 16 tiles, t' = t, pixel p in half p / 16 at dword 4 (p % 4) + (p % 16) / 4.
constexpr LanesIndex lanes16_index() {
  LanesIndex x;
  for (int j = 0; j < 4; ++j)
    for (int L = 0; L < 16; ++L) {
      const int p = 2 * (4 * (L % 4) + L / 4) - 1 + j, pc = p < 0 ? 0 : p > 31 ? 31 : p, q = pc % 16;
      x.idx[j][L] = 16 * (pc / 16) + 4 * (q % 4) + q / 4;
      if (p == pc) x.inside[j] = __mmask16(x.inside[j] | (1u << L));
    }
  return x;
}
// 32 channels: tile rows t / 8 (the two sources), t' = t % 8, pixel p at dword 4 (2 (p / 8) + p % 2) + (p % 8) / 2.
constexpr LanesIndex lanes32_index() {
  LanesIndex x;
  for (int j = 0; j < 4; ++j)
    for (int L = 0; L < 16; ++L) {
      const int t = 4 * (L % 4) + L / 4, p = 2 * (t % 8) - 1 + j, pc = p < 0 ? 0 : p > 15 ? 15 : p;
      x.idx[j][L] = 16 * (t / 8) + 4 * (2 * (pc / 8) + pc % 2) + (pc % 8) / 2;
      if (p == pc) x.inside[j] = __mmask16(x.inside[j] | (1u << L));
    }
  return x;
}
constexpr LanesIndex kLanes16Index = lanes16_index(), kLanes32Index = lanes32_index();

// One patch row's 4 columns d[j] from the staged vectors a and b (I's permutations, preloaded in ix),
// the zero point z in the lanes outside x.
template <const LanesIndex& I>
LOWBIT_AVX512 inline __attribute__((always_inline)) void lanes_patch_row(__m512i a, __m512i b, const __m512i ix[4],
                                                                         __m512i z, __m512i d[4]) {
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512i p = _mm512_maskz_permutex2var_epi32(0xFFFF, a, ix[j], b);
    d[j] = I.inside[j] == 0xFFFF ? p : _mm512_mask_mov_epi32(z, I.inside[j], p);
  }
}

// cp == 16, W == 32, pad_w 1: tile rows [th0, th1) of one image x (H rows of 32 pixels), each a group of
// 16 tiles, from x itself straight into the lanes kernel's V (vl: per tile row [position][quad][lane][4
// channels], lane L holding tile lane_of(L), defined below) -- no V in tile order and no lanes_transpose.
// The transform is bytewise, so it commutes with moving bytes: each row of x is staged once as its 4
// quads of 32 pixels (two vectors each, a dword transpose of 4 loads: dword 4B + c = pixel 4c + B of the
// half; a ring of the 4 rows a tile row reads, 2 new per tile row), then each patch column is one
// permutation of the two halves (vpermt2d), the zero point in the lanes outside x.
LOWBIT_AVX512 void input_rows_lanes16_avx512(const uint8_t* x, int64_t H, int64_t th0, int64_t th1, uint8_t zp,
                                             int32_t o2, uint8_t* vl) {
  const __m512i o = _mm512_set1_epi8(char(o2)), z = _mm512_set1_epi8(char(zp));
  const __m512i ix[4] = {_mm512_load_si512(kLanes16Index.idx[0]), _mm512_load_si512(kLanes16Index.idx[1]),
                         _mm512_load_si512(kLanes16Index.idx[2]), _mm512_load_si512(kLanes16Index.idx[3])};
  alignas(64) uint8_t staged[4][4][2][64];  // x's row h in slot (h + 1) % 4: [quad][half][16 pixels' quad]
  auto stage = [&](int64_t h) {
    uint8_t(*slot)[2][64] = staged[(h + 1) & 3];
    if (h < 0 || h >= H) {
      for (int q = 0; q < 4; ++q) _mm512_store_si512(slot[q][0], z), _mm512_store_si512(slot[q][1], z);
      return;
    }
    const uint8_t* row = x + h * 32 * 16;
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      const __m512i g[4] = {_mm512_loadu_si512(row + 256 * half), _mm512_loadu_si512(row + 256 * half + 64),
                            _mm512_loadu_si512(row + 256 * half + 128), _mm512_loadu_si512(row + 256 * half + 192)};
      __m512i t[4];
      transpose4x4_dwords(g, t);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) _mm512_store_si512(slot[q][half], t[q]);
    }
  };
  for (int64_t th = th0; th < th1; ++th) {
    for (int64_t h = th == th0 ? 2 * th - 1 : 2 * th + 1; h <= 2 * th + 2; ++h) stage(h);
    uint8_t* out = vl + (th - th0) * 16 * 16 * 16;
#pragma GCC unroll 1
    for (int q = 0; q < 4; ++q) {
      __m512i d[4][4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const uint8_t(*slot)[2][64] = staged[(2 * th + i) & 3];  // row 2 th - 1 + i
        lanes_patch_row<kLanes16Index>(_mm512_load_si512(slot[q][0]), _mm512_load_si512(slot[q][1]), ix, z, d[i]);
      }
      transform_store(d, o, ~__mmask64(0), out + q * 64, 16 * 16);
    }
  }
}

// cp == 32, W == 16, pad_w 1: tile rows [th0, th1) of one image x (an even count; H rows of 16 pixels),
// each pair a group of 16 tiles (8 per tile row), into the lanes kernel's V (vl: per pair [position][8
// quads][lane][4 channels]), as input_rows_lanes16_avx512: each row of x staged once as its 8 quads of
// 16 pixels (two 4x4 dword transposes and a 128-bit-lane shuffle per quad pair: dword 4l + c = pixel
// 8 (l / 2) + 2c + l % 2; a ring of the 6 rows a pair reads, 4 new per pair); a patch column of the
// group is then one vpermt2d of the rows of its two tile rows.
LOWBIT_AVX512 void input_rows_lanes32_avx512(const uint8_t* x, int64_t H, int64_t th0, int64_t th1, uint8_t zp,
                                             int32_t o2, uint8_t* vl) {
  const __m512i o = _mm512_set1_epi8(char(o2)), z = _mm512_set1_epi8(char(zp));
  const __m512i ix[4] = {_mm512_load_si512(kLanes32Index.idx[0]), _mm512_load_si512(kLanes32Index.idx[1]),
                         _mm512_load_si512(kLanes32Index.idx[2]), _mm512_load_si512(kLanes32Index.idx[3])};
  alignas(64) uint8_t staged[8][8][64];  // x's row h in slot (h + 1) % 8: [quad][pixel order above][4 channels]
  auto stage = [&](int64_t h) {
    uint8_t(*slot)[64] = staged[(h + 1) & 7];
    if (h < 0 || h >= H) {
      for (int q = 0; q < 8; ++q) _mm512_store_si512(slot[q], z);
      return;
    }
    const uint8_t* row = x + h * 16 * 32;
    __m512i t[2][4];  // pixels 8h..8h+7: lane B, dword c of t[h][r] = pixel 8h + 2c + B / 2's quad r + 4 (B % 2)
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      const __m512i g[4] = {_mm512_loadu_si512(row + 256 * half), _mm512_loadu_si512(row + 256 * half + 64),
                            _mm512_loadu_si512(row + 256 * half + 128), _mm512_loadu_si512(row + 256 * half + 192)};
      transpose4x4_dwords(g, t[half]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      _mm512_store_si512(slot[r], _mm512_maskz_shuffle_i32x4(0xFFFF, t[0][r], t[1][r], 0x88));
      _mm512_store_si512(slot[r + 4], _mm512_maskz_shuffle_i32x4(0xFFFF, t[0][r], t[1][r], 0xDD));
    }
  };
  for (int64_t th = th0; th < th1; th += 2) {
    for (int64_t h = th == th0 ? 2 * th - 1 : 2 * th + 1; h <= 2 * th + 4; ++h) stage(h);
    uint8_t* out = vl + (th - th0) / 2 * 16 * 16 * 32;
#pragma GCC unroll 1
    for (int q = 0; q < 8; ++q) {
      __m512i d[4][4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {  // tile row th reads x's row 2 th - 1 + i, tile row th + 1 that + 2
        lanes_patch_row<kLanes32Index>(_mm512_load_si512(staged[(2 * th + i) & 7][q]),
                                       _mm512_load_si512(staged[(2 * th + i + 2) & 7][q]), ix, z, d[i]);
      }
      transform_store(d, o, ~__mmask64(0), out + q * 64, 16 * 32);
    }
  }
}

// The same from the padded copy (any W and padding): xp at the padded row 2 th. The patches' column j
// of tiles t..t+3 are pixels 2t + j + {0, 2, 4, 6} (cp 16), of tiles t, t+1 pixels 2t + j + {0, 2}
// (cp 32); a 128-bit-lane shuffle of two 64-byte loads per column.
template <int CP>
LOWBIT_AVX512 void input_row_padded_avx512(const uint8_t* xp, int64_t Wp, int64_t tiles, int32_t o2, uint8_t* v,
                                           int64_t vstride) {
  static_assert(CP == 16 || CP == 32);
  const __m512i o = _mm512_set1_epi8(char(o2));
  for (int64_t t = 0; t < tiles; t += 64 / CP) {
    __m512i d[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const uint8_t* row = xp + (i * Wp + 2 * t) * CP;
      if constexpr (CP == 16) {
        const __m512i z0 = _mm512_loadu_si512(row), z1 = _mm512_loadu_si512(row + 64);       // pixels 0-3, 4-7
        const __m512i z2 = _mm512_loadu_si512(row + 32), z3 = _mm512_loadu_si512(row + 96);  // pixels 2-5, 6-9
        d[i][0] = _mm512_maskz_shuffle_i64x2(kAll8, z0, z1, 0x88);                           // pixels 0, 2, 4, 6
        d[i][1] = _mm512_maskz_shuffle_i64x2(kAll8, z0, z1, 0xDD);                           // 1, 3, 5, 7
        d[i][2] = _mm512_maskz_shuffle_i64x2(kAll8, z2, z3, 0x88);                           // 2, 4, 6, 8
        d[i][3] = _mm512_maskz_shuffle_i64x2(kAll8, z2, z3, 0xDD);                           // 3, 5, 7, 9
      } else {
        const __m512i z0 = _mm512_loadu_si512(row), z1 = _mm512_loadu_si512(row + 64);  // pixels 0-1, 2-3
        const __m512i z2 = _mm512_loadu_si512(row + 128);                               // pixels 4-5
        d[i][0] = _mm512_maskz_shuffle_i64x2(kAll8, z0, z1, 0x44);                      // pixels 0, 2
        d[i][1] = _mm512_maskz_shuffle_i64x2(kAll8, z0, z1, 0xEE);                      // 1, 3
        d[i][2] = _mm512_maskz_shuffle_i64x2(kAll8, z1, z2, 0x44);                      // 2, 4
        d[i][3] = _mm512_maskz_shuffle_i64x2(kAll8, z1, z2, 0xEE);                      // 3, 5
      }
    }
    transform_store(d, o, ~__mmask64(0), v + t * CP, vstride);
  }
}

// Any cp: one tile at a time, 64 channels per vector.
LOWBIT_AVX512 void input_row_avx512(const PatchRows& r, int64_t cp, int64_t tiles, int32_t o2, uint8_t* v,
                                    int64_t vstride) {
  const __m512i o = _mm512_set1_epi8(char(o2)), z = _mm512_set1_epi8(char(r.zp));
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t c0 = 0; c0 < cp; c0 += 64) {
      const int64_t n = std::min<int64_t>(64, cp - c0);
      const __mmask64 mask = n == 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1;
      __m512i d[4][4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const int64_t px = 2 * t + j;
          d[i][j] =
              r.row[i] && px >= r.lo && px < r.hi
                  ? _mm512_mask_loadu_epi8(z, mask, reinterpret_cast<const void*>(r.row[i] + uintptr_t(px * cp + c0)))
                  : z;
        }
      transform_store(d, o, mask, v + t * cp + c0, vstride);
    }
}

// ---------------------------------------------------------------------------------------------
// Output transform of one tile: m at M[0][t] (positions mstride int32 apart), comp [4][K]; writes
// y[dp][dq] = (A^T m A - comp) / 4 to out[(dp ldo_p + dq) K] for dp < np, dq < nq.
// ---------------------------------------------------------------------------------------------

void output_tile_portable(const int32_t* m, int64_t mstride, const int32_t* comp, int64_t K, int64_t ldo_p, int np,
                          int nq, int32_t* out) {
  for (int64_t k = 0; k < K; ++k) {
    int64_t mm[16], y[4];
    for (int pos = 0; pos < 16; ++pos) mm[pos] = m[pos * mstride + k];
    output_transform(mm, y);
    for (int dp = 0; dp < np; ++dp)
      for (int dq = 0; dq < nq; ++dq)
        out[(dp * ldo_p + dq) * K + k] = int32_t((y[dp * 2 + dq] - comp[(dp * 2 + dq) * K + k]) / 4);
  }
}

// y = A^T m A for 16 columns: m's 16 positions mstride int32 apart (the first columns: mask).
LOWBIT_AVX512 inline void output_transform_avx512(const int32_t* m, int64_t mstride, __mmask16 mask, __m512i y[4]) {
  __m512i v[16];
#pragma GCC unroll 16
  for (int pos = 0; pos < 16; ++pos) v[pos] = _mm512_maskz_loadu_epi32(mask, m + pos * mstride);
  __m512i s0[4], s1[4];  // rows of A^T m
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    s0[j] = _mm512_add_epi32(_mm512_add_epi32(v[j], v[4 + j]), v[8 + j]);
    s1[j] = _mm512_sub_epi32(_mm512_sub_epi32(v[4 + j], v[8 + j]), v[12 + j]);
  }
  y[0] = _mm512_add_epi32(_mm512_add_epi32(s0[0], s0[1]), s0[2]);
  y[1] = _mm512_sub_epi32(_mm512_sub_epi32(s0[1], s0[2]), s0[3]);
  y[2] = _mm512_add_epi32(_mm512_add_epi32(s1[0], s1[1]), s1[2]);
  y[3] = _mm512_sub_epi32(_mm512_sub_epi32(s1[1], s1[2]), s1[3]);
}

LOWBIT_AVX512 void output_tile_avx512(const int32_t* m, int64_t mstride, const int32_t* comp, int64_t K, int64_t ldo_p,
                                      int np, int nq, int32_t* out) {
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    const int64_t n = std::min<int64_t>(16, K - k0);
    const __mmask16 mask = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
    __m512i y[4];
    output_transform_avx512(m + k0, mstride, mask, y);
    for (int dp = 0; dp < np; ++dp)
      for (int dq = 0; dq < nq; ++dq) {
        const int j = dp * 2 + dq;
        const __m512i c = _mm512_maskz_loadu_epi32(mask, comp + j * K + k0);
        _mm512_mask_storeu_epi32(out + (dp * ldo_p + dq) * K + k0, mask,
                                 _mm512_maskz_srai_epi32(mask, _mm512_sub_epi32(y[j], c), 2));
      }
  }
}

// The same, then (2f) (requant.h: the float constants verified equal to (2); requant_f32.h's
// operations, so the same codes as requant_block_avx512_f32) with the uint8 residual at res8 (or none): codes at
// out8, both laid out as out (rows of K).
LOWBIT_AVX512 void output_tile_requant_avx512(const int32_t* m, int64_t mstride, const int32_t* comp, int64_t K,
                                              int64_t ldo, int np, int nq, const Requantization& q, const uint8_t* res8,
                                              uint8_t* out8) {
  constexpr __mmask16 all = 0xFFFF;
  const __m512 qmin = _mm512_set1_ps(float(q.qmin)), qmax = _mm512_set1_ps(float(q.qmax));
  // Locals: a uint8_t store may alias q's vectors (see lane_kernel_vnni).
  const float *mulp = q.multiplier_f32.data(), *offp = q.offset_f32.data(), *rmulp = q.residual_multiplier_f32.data();
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    const int64_t n = std::min<int64_t>(16, K - k0);
    const __mmask16 mask = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
    __m512i y[4];
    output_transform_avx512(m + k0, mstride, mask, y);
    const __m512 mul = _mm512_maskz_loadu_ps(mask, mulp + k0);
    const __m512 b = _mm512_maskz_loadu_ps(mask, offp + k0);
    const __m512 mr = res8 ? _mm512_maskz_loadu_ps(mask, rmulp + k0) : _mm512_setzero_ps();
    for (int dp = 0; dp < np; ++dp)
      for (int dq = 0; dq < nq; ++dq) {
        const int j = dp * 2 + dq;
        const int64_t at = (dp * ldo + dq) * K + k0;
        const __m512i c = _mm512_maskz_loadu_epi32(mask, comp + j * K + k0);
        const __m512i acc = _mm512_maskz_srai_epi32(all, _mm512_sub_epi32(y[j], c), 2);
        const __m512 u =
            res8 ? detail::requant_f32_value(acc, mul, b,
                                             _mm512_maskz_cvtepu8_epi32(all, _mm_maskz_loadu_epi8(mask, res8 + at)), mr)
                 : detail::requant_f32_value(acc, mul, b);
        _mm_mask_storeu_epi8(out8 + at, mask,
                             _mm512_maskz_cvtepi32_epi8(all, detail::requant_f32_codes(u, qmin, qmax)));
      }
  }
}

// ---------------------------------------------------------------------------------------------
// VNNI: the 16 products and the output transform fused, one 16-column vector of K at a time for MT
// tiles: per row a of positions, acc[i][b] = sum_c clamp(U'[a 4 + b]) (V + o) in registers
// (vpdpbusd), folded at once into y[i] = A^T acc A (rows of A^T m first: r0 = m0 + m1 + m2,
// r1 = m1 - m2 - m3, then y += A^T[.][a] r), so M never goes to memory. The tiles' V rows are cp
// bytes apart at v (positions vs apart); bp[pos] is the column vector's first quad in u[pos]
// (quads bstride bytes apart). RAW: stores 4 y - comp unshifted (the clamped entries' terms are
// added before the shift), else (4 y - comp) / 4.
// ---------------------------------------------------------------------------------------------

struct TileOut {
  int32_t* out = nullptr;  // the tile's output (0, 0) at column k0
  int np = 2, nq = 2;      // outputs inside the image
  int64_t row = 0;         // the output row (n P + p) Q + q of the tile's (0, 0)
};

template <int MT, bool RAW, int CPQ>
LOWBIT_AVX512_VNNI void fused_tiles_vnni(const uint8_t* v, int64_t vs, int64_t cp_in, const int8_t* const bp[16],
                                         int64_t bstride, const int32_t* comp, int64_t K, __mmask16 mask, int64_t ldo,
                                         const TileOut* to) {
  const int64_t cp = CPQ > 0 ? CPQ * 4 : cp_in;  // CPQ > 0: C' / 4 fixed, the quad loop unrolled
  __m512i y[MT][4];
#pragma GCC unroll 4
  for (int i = 0; i < MT; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) y[i][j] = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int a = 0; a < 4; ++a) {
    __m512i acc[MT][4];
#pragma GCC unroll 4
    for (int i = 0; i < MT; ++i)
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b) acc[i][b] = _mm512_setzero_si512();
    const uint8_t* vb[4] = {v + a * 4 * vs, v + (a * 4 + 1) * vs, v + (a * 4 + 2) * vs, v + (a * 4 + 3) * vs};
    const int8_t* bb[4] = {bp[a * 4], bp[a * 4 + 1], bp[a * 4 + 2], bp[a * 4 + 3]};
#pragma GCC unroll 16
    for (int64_t q = 0; q < cp / 4; ++q) {
      __m512i bv[4];
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b) bv[b] = _mm512_load_si512(bb[b]), bb[b] += bstride;
#pragma GCC unroll 4
      for (int i = 0; i < MT; ++i)
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) {
          int32_t quad;
          std::memcpy(&quad, vb[b] + i * cp, 4);
          acc[i][b] = _mm512_dpbusd_epi32(acc[i][b], _mm512_set1_epi32(quad), bv[b]);
        }
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b) vb[b] += 4;
    }
#pragma GCC unroll 4
    for (int i = 0; i < MT; ++i) {
      const __m512i r0 = _mm512_add_epi32(_mm512_add_epi32(acc[i][0], acc[i][1]), acc[i][2]);
      const __m512i r1 = _mm512_sub_epi32(_mm512_sub_epi32(acc[i][1], acc[i][2]), acc[i][3]);
      if (a < 3) y[i][0] = _mm512_add_epi32(y[i][0], r0), y[i][1] = _mm512_add_epi32(y[i][1], r1);
      if (a == 1) y[i][2] = _mm512_add_epi32(y[i][2], r0), y[i][3] = _mm512_add_epi32(y[i][3], r1);
      if (a >= 2) y[i][2] = _mm512_sub_epi32(y[i][2], r0), y[i][3] = _mm512_sub_epi32(y[i][3], r1);
    }
  }
  __m512i c[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) c[j] = _mm512_maskz_loadu_epi32(mask, comp + j * K);
#pragma GCC unroll 4
  for (int i = 0; i < MT; ++i)
    for (int dp = 0; dp < to[i].np; ++dp)
      for (int dq = 0; dq < to[i].nq; ++dq) {
        const int j = dp * 2 + dq;
        __m512i r = _mm512_sub_epi32(y[i][j], c[j]);
        if (!RAW) r = _mm512_maskz_srai_epi32(mask, r, 2);
        _mm512_mask_storeu_epi32(to[i].out + (dp * ldo + dq) * K, mask, r);
      }
}

using FusedFn = void (*)(const uint8_t*, int64_t, int64_t, const int8_t* const*, int64_t, const int32_t*, int64_t,
                         __mmask16, int64_t, const TileOut*);
constexpr int kFusedMT = 3;
template <int CPQ>
constexpr FusedFn kFusedFor[2][kFusedMT] = {
    {&fused_tiles_vnni<1, false, CPQ>, &fused_tiles_vnni<2, false, CPQ>, &fused_tiles_vnni<3, false, CPQ>},
    {&fused_tiles_vnni<1, true, CPQ>, &fused_tiles_vnni<2, true, CPQ>, &fused_tiles_vnni<3, true, CPQ>}};

// The kernels for C' (unrolled for 16, 32 and 64 channels), [raw][MT - 1].
const FusedFn (*fused_kernels(int64_t cp))[kFusedMT] {
  return cp == 16 ? kFusedFor<4> : cp == 32 ? kFusedFor<8> : cp == 64 ? kFusedFor<16> : kFusedFor<0>;
}

// ---------------------------------------------------------------------------------------------
// VNNI with the tiles in the vector lanes (C' = 16 or 32): V of 16 tiles per position and channel quad is
// one vector (the u8 operand), each weight quad a broadcast from memory (the s8 operand), so each
// vpdpbusd is one instruction and each V vector serves KB output channels. V is regrouped (by
// lanes_transpose, into a buffer of its own) as [group of 16 tiles][position][quad][lane][4 channels],
// lane L holding tile 4 (L % 4) + L / 4 of the group, and lane_u as [channel / 4][position][channel % 4]
// [quad]: within one call every V vector and weight quad is at a fixed offset from the group's and the
// channel block's start (no address arithmetic in the kernel).
//
// The output transform y = A^T m A rides on the accumulation: with A^T = [[1,1,1,0],[0,1,-1,-1]],
// y[0] = sum_{a<3} r0[a], y[1] = sum_{a<3} r1[a], y[2] = r0[1] - r0[2] - r0[3], y[3] = r1[1] - r1[2]
// - r1[3], where r0[a] = m[a][0] + m[a][1] + m[a][2] and r1[a] = m[a][1] - m[a][2] - m[a][3]. The
// products of columns b = 0 and 3 enter one sum each (r0 resp. r1, or y directly for rows a = 0 and
// 3), so vpdpbusd accumulates them there at once, with the weights' sign folded in (lane_u holds
// sign(a, b) U': -1 for b = 3 with a < 3 and for b = 0 with a = 3); columns 1 and 2 go through one
// temporary each. Per channel: y[4], r0, r1 and the temporary, so 4 channels fit the 32 registers.
// The clamped entries of the call's channels (lane_overflow) are added to y in the registers: excess
// (V + o) at their position, times A^T[dp][a] A^T[dq][b] for output j = 2 dp + dq.
// Results per channel k and output j of the tile: SHIFT (4 y - comp) / 4 (int32, into
// ybuf[j][k][lane], transposed by lane_store), or REQ / REQ_RES: (4 y - comp) / 4 requantized with
// (2f) (requant.h; requant_f32.h's operations, so the same codes as requant_block_avx512_f32), the
// uint8 residual read from rbuf[j][k][lane], into obuf[j][k / 4] (packed 4 channels per vector, with
// their dwords transposed: lane_store_u8 transposes the bytes the rest of the way).
// ---------------------------------------------------------------------------------------------

inline int64_t lane_of(int64_t i) { return 4 * (i % 4) + i / 4; }  // tile i of a group <-> lane (an involution)

// The sign lane_u folds into U' at position a 4 + b (above).
inline int lane_sign(int pos) {
  const int a = pos / 4, b = pos % 4;
  return (b == 3 && a < 3) || (b == 0 && a == 3) ? -1 : 1;
}

// Tiles 4i..4i+3 of a group (16 channels each, one per 128-bit lane) in g[i] -> quads 0..3, each 16
// lanes of 4 channels, at p (64 bytes apart).
LOWBIT_AVX512 inline void lanes_store4(const __m512i g[4], uint8_t* p) {
  __m512i q[4];
  transpose4x4_dwords(g, q);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) _mm512_storeu_si512(p + 64 * i, q[i]);
}

// V [position][tile][CP channels] (positions vs bytes apart) -> vl [group][position][quad][lane][4
// channels] (CP = 16 or 32; with 32, each half of the channels as with 16).
template <int CP>
LOWBIT_AVX512 void lanes_transpose(const uint8_t* v, int64_t vs, int64_t T, uint8_t* vl) {
  static_assert(CP == 16 || CP == 32);
  for (int64_t g = 0; g < T; g += 16)
    for (int pos = 0; pos < 16; ++pos) {
      const uint8_t* p = v + pos * vs + g * CP;
      uint8_t* out = vl + (g / 16 * 16 + pos) * 16 * CP;
      if constexpr (CP == 16) {
        const __m512i x[4] = {_mm512_loadu_si512(p), _mm512_loadu_si512(p + 64), _mm512_loadu_si512(p + 128),
                              _mm512_loadu_si512(p + 192)};
        lanes_store4(x, out);
      } else {
        __m512i z[8];  // z[i]: tiles 2i, 2i + 1
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) z[i] = _mm512_loadu_si512(p + 64 * i);
        __m512i lo[4], hi[4];  // tiles 4i..4i+3, channels 0-15 resp. 16-31
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          lo[i] = _mm512_maskz_shuffle_i64x2(kAll8, z[2 * i], z[2 * i + 1], 0x88);
          hi[i] = _mm512_maskz_shuffle_i64x2(kAll8, z[2 * i], z[2 * i + 1], 0xDD);
        }
        lanes_store4(lo, out);
        lanes_store4(hi, out + 256);
      }
    }
}

enum LaneMode { kLaneShift, kLaneReq, kLaneReqRes };

// What the lane kernel writes, at the 16-channel block's first channel k0: comp and the (2f)
// constants there; ybuf [4][16][16] int32 or obuf [4][4][64] uint8 (above); rbuf [4][16][16] uint8.
struct LaneOut {
  const int32_t* comp = nullptr;  // [4][K]
  int64_t K = 0, k0 = 0;
  const WinogradPackedS8::Overflow* overflow = nullptr;  // the call's clamped entries (k absolute)
  int64_t overflows = 0;
  int32_t* ybuf = nullptr;
  uint8_t* obuf = nullptr;
  const uint8_t* rbuf = nullptr;
  const float *mul = nullptr, *off = nullptr, *rmul = nullptr;
};

// Channels kc .. kc + KB of the block: vg = the group's regrouped V, ul = lane_u at channel k0 + kc
// (a multiple of 4).
template <int KB, int MODE, int QN>
LOWBIT_AVX512_VNNI void lane_kernel_vnni(const uint8_t* vg, const int32_t* ul, const LaneOut& o, int64_t kc) {
  // The channels' constants, read before the first store (a store through uint8_t may alias
  // anything: read after one, each would be loaded again). mul / 4: the requantization takes 4 y -
  // comp itself, float(4 a) m / 4 being float(a) m exactly (powers of two), so the same codes.
  float mul[KB], off[KB], rmul[KB];
  int32_t* const ybuf = o.ybuf;
  uint8_t* const obuf = o.obuf;
  const uint8_t* const rbuf = o.rbuf;
  __m512i y[KB][4];  // from -comp on: 4 y - comp at the end
#pragma GCC unroll 4
  for (int kk = 0; kk < KB; ++kk) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) y[kk][j] = _mm512_set1_epi32(-o.comp[j * o.K + kc + kk]);
    if constexpr (MODE != kLaneShift) mul[kk] = o.mul[kc + kk] * 0.25f, off[kk] = o.off[kc + kk];
    if constexpr (MODE == kLaneReqRes) rmul[kk] = o.rmul[kc + kk];
  }
#pragma GCC unroll 4
  for (int a = 0; a < 4; ++a) {
    __m512i r0[KB], r1[KB];  // rows a = 1, 2
#pragma GCC unroll 4
    for (int kk = 0; kk < KB; ++kk) r0[kk] = _mm512_setzero_si512(), r1[kk] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b) {
      const uint8_t* vp = vg + (a * 4 + b) * QN * 64;
      const int32_t* up = ul + (a * 4 + b) * 4 * QN;
      __m512i tmp[KB];
#pragma GCC unroll 4
      for (int kk = 0; kk < KB; ++kk) tmp[kk] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int q = 0; q < QN; ++q) {
        const __m512i vv = _mm512_loadu_si512(vp + q * 64);
#pragma GCC unroll 4
        for (int kk = 0; kk < KB; ++kk) {  // acc += vv (u8) . the weight quad broadcast (s8): one instruction
          __m512i& acc = b == 1 || b == 2 ? tmp[kk]
                         : b == 0         ? (a == 0   ? y[kk][0]
                                             : a == 3 ? y[kk][2]
                                                      : r0[kk])
                                          : (a == 0   ? y[kk][1]
                                             : a == 3 ? y[kk][3]
                                                      : r1[kk]);
          asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(vv), "m"(up[kk * QN + q]));
        }
      }
      if (b == 1 || b == 2) {
#pragma GCC unroll 4
        for (int kk = 0; kk < KB; ++kk) {
          __m512i& p0 = a == 0 ? y[kk][0] : a == 3 ? y[kk][2] : r0[kk];
          __m512i& p1 = a == 0 ? y[kk][1] : a == 3 ? y[kk][3] : r1[kk];
          p0 = a == 3 ? _mm512_sub_epi32(p0, tmp[kk]) : _mm512_add_epi32(p0, tmp[kk]);
          // column b enters r1 with sign +1 (b = 1) or -1 (b = 2); row 3 enters y with -1
          p1 = (b == 1) != (a == 3) ? _mm512_add_epi32(p1, tmp[kk]) : _mm512_sub_epi32(p1, tmp[kk]);
        }
      }
    }
    if (a == 1 || a == 2) {
#pragma GCC unroll 4
      for (int kk = 0; kk < KB; ++kk) {
        y[kk][0] = _mm512_add_epi32(y[kk][0], r0[kk]), y[kk][1] = _mm512_add_epi32(y[kk][1], r1[kk]);
        if (a == 1)
          y[kk][2] = _mm512_add_epi32(y[kk][2], r0[kk]), y[kk][3] = _mm512_add_epi32(y[kk][3], r1[kk]);
        else
          y[kk][2] = _mm512_sub_epi32(y[kk][2], r0[kk]), y[kk][3] = _mm512_sub_epi32(y[kk][3], r1[kk]);
      }
    }
  }
  constexpr __mmask16 all = 0xFFFF;
  for (int64_t i = 0; i < o.overflows; ++i) {  // the clamped entries: y += A^T[dp][a] A^T[dq][b] excess (V + o)
    const WinogradPackedS8::Overflow& e = o.overflow[i];
    const __m512i quad = _mm512_loadu_si512(vg + (e.pos * QN + e.c / 4) * 64);
    const __m512i byte = _mm512_maskz_and_epi32(
        all, _mm512_maskz_srl_epi32(all, quad, _mm_cvtsi32_si128(8 * (e.c % 4))), _mm512_set1_epi32(0xFF));
    const __m512i val = _mm512_maskz_mullo_epi32(all, byte, _mm512_set1_epi32(e.excess));
    const int a = e.pos / 4, b = e.pos % 4;
    const int64_t kk = e.k - o.k0 - kc;
#pragma GCC unroll 4
    for (int k2 = 0; k2 < KB; ++k2)
      if (k2 == kk)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const int coef = kAT[j / 2][a] * kAT[j % 2][b];
          if (coef > 0) y[k2][j] = _mm512_add_epi32(y[k2][j], val);
          if (coef < 0) y[k2][j] = _mm512_sub_epi32(y[k2][j], val);
        }
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512i codes[4];  // REQ / REQ_RES: channel kk's rounded codes (int32; 0 past KB)
#pragma GCC unroll 4
    for (int kk = 0; kk < 4; ++kk) {
      if (kk >= KB) {
        codes[kk] = _mm512_setzero_si512();
        continue;
      }
      const int64_t k = kc + kk;
      if constexpr (MODE == kLaneShift) {
        _mm512_store_si512(ybuf + (j * 16 + k) * 16, _mm512_maskz_srai_epi32(all, y[kk][j], 2));
      } else {  // (2f) (requant_f32.h) of (4 y - comp) / 4
        __m512 u;
        if constexpr (MODE == kLaneReqRes) {
          const __m128i r8 = _mm_load_si128(reinterpret_cast<const __m128i*>(rbuf + (j * 16 + k) * 16));
          u = detail::requant_f32_value(y[kk][j], _mm512_set1_ps(mul[kk]), _mm512_set1_ps(off[kk]),
                                        _mm512_maskz_cvtepu8_epi32(all, r8), _mm512_set1_ps(rmul[kk]));
        } else {
          u = detail::requant_f32_value(y[kk][j], _mm512_set1_ps(mul[kk]), _mm512_set1_ps(off[kk]));
        }
        codes[kk] = _mm512_maskz_cvt_roundps_epi32(all, u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      }
    }
    if constexpr (MODE != kLaneShift) {
      // Saturated to int8 (through int16: the same), 128-bit lane L of the vector holding channel kk's
      // tile lanes 4L..4L+3 as its dword kk. lane_store_u8 clamps the bytes to [qmin, qmax] (the same
      // codes as clamping first: the bounds are integers, |u| < 2^30 and 0 <= qmin < qmax <= 127).
      const __m512i packed =
          _mm512_maskz_packs_epi16(~__mmask64(0), _mm512_maskz_packs_epi32(~__mmask32(0), codes[0], codes[1]),
                                   _mm512_maskz_packs_epi32(~__mmask32(0), codes[2], codes[3]));
      _mm512_store_si512(obuf + j * 256 + kc * 16, packed);
    }
  }
}

using LaneFn = void (*)(const uint8_t*, const int32_t*, const LaneOut&, int64_t);
template <int MODE, int QN>
constexpr LaneFn kLaneFor[4] = {&lane_kernel_vnni<1, MODE, QN>, &lane_kernel_vnni<2, MODE, QN>,
                                &lane_kernel_vnni<3, MODE, QN>, &lane_kernel_vnni<4, MODE, QN>};
// [C' / 16 - 1][mode][KB - 1]
constexpr const LaneFn* kLane[2][3] = {{kLaneFor<kLaneShift, 4>, kLaneFor<kLaneReq, 4>, kLaneFor<kLaneReqRes, 4>},
                                       {kLaneFor<kLaneShift, 8>, kLaneFor<kLaneReq, 8>, kLaneFor<kLaneReqRes, 8>}};

// rows r[16] (row k: 16 lanes) -> columns c[16] (column L: 16 channels), a 16x16 int32 transpose.
LOWBIT_AVX512 inline void transpose16x16(const __m512i r[16], __m512i c[16]) {
  __m512i a[16], b[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_maskz_unpacklo_epi32(0xFFFF, r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_maskz_unpackhi_epi32(0xFFFF, r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // b[4i + m], 128-bit lane l: rows 4i..4i+3 of column 4l + m
    b[4 * i] = _mm512_maskz_unpacklo_epi64(kAll8, a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_maskz_unpackhi_epi64(kAll8, a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_maskz_unpacklo_epi64(kAll8, a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_maskz_unpackhi_epi64(kAll8, a[4 * i + 1], a[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {
    const __m512i e0 = _mm512_maskz_shuffle_i32x4(0xFFFF, b[m], b[4 + m], 0x88);       // rows 0-7 of columns m, 8 + m
    const __m512i d0 = _mm512_maskz_shuffle_i32x4(0xFFFF, b[m], b[4 + m], 0xDD);       // ... of columns 4 + m, 12 + m
    const __m512i e1 = _mm512_maskz_shuffle_i32x4(0xFFFF, b[8 + m], b[12 + m], 0x88);  // rows 8-15
    const __m512i d1 = _mm512_maskz_shuffle_i32x4(0xFFFF, b[8 + m], b[12 + m], 0xDD);
    c[m] = _mm512_maskz_shuffle_i32x4(0xFFFF, e0, e1, 0x88);
    c[8 + m] = _mm512_maskz_shuffle_i32x4(0xFFFF, e0, e1, 0xDD);
    c[4 + m] = _mm512_maskz_shuffle_i32x4(0xFFFF, d0, d1, 0x88);
    c[12 + m] = _mm512_maskz_shuffle_i32x4(0xFFFF, d0, d1, 0xDD);
  }
}

// ybuf[j][k][lane] -> for each lane whose tile is stored (d[tile].np): output rows of the block's first
// channels (mask) at d[tile].out + k0.
LOWBIT_AVX512 void lane_store(const int32_t* ybuf, const TileOut* d, int64_t k0, int64_t K, int64_t ldo,
                              __mmask16 mask) {
  for (int j = 0; j < 4; ++j) {
    const int dp = j / 2, dq = j % 2;
    __m512i r[16], c[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) r[k] = _mm512_load_si512(ybuf + (j * 16 + k) * 16);
    transpose16x16(r, c);
    for (int L = 0; L < 16; ++L) {
      const TileOut& o = d[lane_of(L)];
      if (dp < o.np && dq < o.nq) _mm512_mask_storeu_epi32(o.out + k0 + (dp * ldo + dq) * K, mask, c[L]);
    }
  }
}

// Bytes (row r, column c) of each 4x4 block <-> (c, r) within a 128-bit lane.
LOWBIT_AVX512 inline __m512i byte_blocks_transpose() {
  return _mm512_maskz_broadcast_i32x4(0xFFFF, _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
}
// Dwords (lane r, dword B) <-> (lane B, dword r) within a vector (a vpermd index).
LOWBIT_AVX512 inline __m512i dword_blocks_transpose() {
  return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

// A 16x16 byte transpose, rows 16 bytes: x[g] holds rows 4g..4g+3 (one per 128-bit lane); out[m]
// holds rows 4m..4m+3 of the transpose. AVX-512BW only (no VBMI): per 4x4 block of dwords a vpermd,
// per 4x4 block of bytes a vpshufb, and 128-bit-lane shuffles between the two. DWORDS_FIRST: x[g]
// comes with its dwords transposed already (128-bit lane B, dword r = row 4g + r's columns 4B..4B+3).
template <bool DWORDS_FIRST = false>
LOWBIT_AVX512 inline __attribute__((always_inline)) void transpose16x16_u8(const __m512i x[4], __m512i out[4]) {
  const __m512i dwords = dword_blocks_transpose();
  const __m512i bytes = byte_blocks_transpose();
  __m512i u[4];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g)  // lane B of u[g]: the block (rows 4g.., columns 4B..) transposed
    u[g] = _mm512_maskz_shuffle_epi8(~__mmask64(0),
                                     DWORDS_FIRST ? x[g] : _mm512_maskz_permutexvar_epi32(0xFFFF, dwords, x[g]), bytes);
  const __m512i lo01 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[0], u[1], 0x44);  // lanes u0.0 u0.1 u1.0 u1.1
  const __m512i lo23 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[2], u[3], 0x44);
  const __m512i hi01 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[0], u[1], 0xEE);  // u0.2 u0.3 u1.2 u1.3
  const __m512i hi23 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[2], u[3], 0xEE);
  const __m512i w[4] = {_mm512_maskz_shuffle_i32x4(0xFFFF, lo01, lo23, 0x88),   // u0.0 u1.0 u2.0 u3.0
                        _mm512_maskz_shuffle_i32x4(0xFFFF, lo01, lo23, 0xDD),   // u*.1
                        _mm512_maskz_shuffle_i32x4(0xFFFF, hi01, hi23, 0x88),   // u*.2
                        _mm512_maskz_shuffle_i32x4(0xFFFF, hi01, hi23, 0xDD)};  // u*.3
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) out[m] = _mm512_maskz_permutexvar_epi32(0xFFFF, dwords, w[m]);
}

// 128-bit lane l of x; x with lane l replaced by r.
LOWBIT_AVX512 inline __m128i lane128(__m512i x, int l) {
  switch (l) {
    case 0: return _mm512_maskz_extracti32x4_epi32(0xF, x, 0);
    case 1: return _mm512_maskz_extracti32x4_epi32(0xF, x, 1);
    case 2: return _mm512_maskz_extracti32x4_epi32(0xF, x, 2);
    default: return _mm512_maskz_extracti32x4_epi32(0xF, x, 3);
  }
}
LOWBIT_AVX512 inline __m512i with_lane128(__m512i x, int l, __m128i r) {
  switch (l) {
    case 0: return _mm512_inserti32x4(x, r, 0);
    case 1: return _mm512_inserti32x4(x, r, 1);
    case 2: return _mm512_inserti32x4(x, r, 2);
    default: return _mm512_inserti32x4(x, r, 3);
  }
}

// The group's 16 tiles all inside the image and all 16 channels of the block stored: the unrolled
// paths below (no per-lane tests), with p[L] the output (or residual) row of lane L's tile.
bool lane_group_full(const TileOut* d, __mmask16 mask) {
  if (mask != 0xFFFF) return false;
  for (int i = 0; i < 16; ++i)
    if (d[i].np != 2 || d[i].nq != 2) return false;
  return true;
}

// The group one tile row of 16-channel pixels: lane_group_full, K = 16 and tile i's output pixels 2 i
// after tile 0's, so each output row of the group is 32 pixels of 16 bytes back to back.
bool lane_group_rows(const TileOut* d, __mmask16 mask, int64_t K) {
  if (K != 16 || !lane_group_full(d, mask)) return false;
  for (int i = 1; i < 16; ++i)
    if (d[i].row != d[0].row + 2 * i) return false;
  return true;
}

// lane_store_u8 where lane_group_rows: per j, the byte blocks of obuf[j][g] transposed (lane B, dword c:
// lane 4B + c's channels 4g..4g+3), then the dwords: v[c], lane B = lane 4B + c's 16 channels = tile
// 4c + B (lane_of). Output row dp's pixels 8c..8c+7 are then v[c] of dq 0 and 1 interleaved by 128-bit
// lanes: two 64-byte stores.
LOWBIT_AVX512 void lane_store_u8_rows(const uint8_t* obuf, int64_t row0, int64_t ldo, int8_t qmin, int8_t qmax,
                                      uint8_t* y8) {
  const __m512i lo = _mm512_set1_epi8(qmin), hi = _mm512_set1_epi8(qmax), bytes = byte_blocks_transpose();
  const __m512i first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11),
                second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  for (int dp = 0; dp < 2; ++dp) {
    __m512i v[2][4];
#pragma GCC unroll 2
    for (int dq = 0; dq < 2; ++dq) {
      __m512i u[4];
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g)
        u[g] = _mm512_maskz_shuffle_epi8(~__mmask64(0), _mm512_load_si512(obuf + (2 * dp + dq) * 256 + g * 64), bytes);
      transpose4x4_dwords(u, v[dq]);
    }
    uint8_t* out = y8 + (row0 + dp * ldo) * 16;
    auto clamp = [&](__m512i x) {
      return _mm512_maskz_min_epi8(~__mmask64(0), _mm512_maskz_max_epi8(~__mmask64(0), x, lo), hi);
    };
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      _mm512_storeu_si512(out + 128 * c, clamp(_mm512_maskz_permutex2var_epi64(kAll8, v[0][c], first, v[1][c])));
      _mm512_storeu_si512(out + 128 * c + 64, clamp(_mm512_maskz_permutex2var_epi64(kAll8, v[0][c], second, v[1][c])));
    }
  }
}

// lane_load_u8 where lane_group_rows: lane_store_u8_rows backwards, then the dwords of each vector
// transposed (rbuf's [k][lane] order).
LOWBIT_AVX512 void lane_load_u8_rows(const uint8_t* res8, int64_t row0, int64_t ldo, uint8_t* rbuf) {
  const __m512i bytes = byte_blocks_transpose();
  const __m512i dwords = dword_blocks_transpose();
  const __m512i even = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), odd = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
  for (int dp = 0; dp < 2; ++dp) {
    const uint8_t* in = res8 + (row0 + dp * ldo) * 16;
    __m512i v[2][4];
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m512i a = _mm512_loadu_si512(in + 128 * c), b = _mm512_loadu_si512(in + 128 * c + 64);
      v[0][c] = _mm512_maskz_permutex2var_epi64(kAll8, a, even, b);
      v[1][c] = _mm512_maskz_permutex2var_epi64(kAll8, a, odd, b);
    }
#pragma GCC unroll 2
    for (int dq = 0; dq < 2; ++dq) {
      __m512i u[4];
      transpose4x4_dwords(v[dq], u);
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g)
        _mm512_store_si512(
            rbuf + (2 * dp + dq) * 256 + g * 64,
            _mm512_maskz_permutexvar_epi32(0xFFFF, dwords, _mm512_maskz_shuffle_epi8(~__mmask64(0), u[g], bytes)));
    }
  }
}

// obuf[j][k / 4] (int8-saturated codes, 64 bytes: 128-bit lane L, dword k % 4 = channel k's tile lanes
// 4L..4L+3) -> clamped to [qmin, qmax], for each lane whose tile is
// stored (d[tile].np): the first channels (mask) of its output pixels, rows of K bytes (ldo pixels per
// image row) at y8 + d[tile].row K.
LOWBIT_AVX512 void lane_store_u8(const uint8_t* obuf, const TileOut* d, int64_t K, int64_t ldo, __mmask16 mask,
                                 int8_t qmin, int8_t qmax, uint8_t* y8) {
  if (lane_group_rows(d, mask, K)) return lane_store_u8_rows(obuf, d[0].row, ldo, qmin, qmax, y8);
  const __m512i lo = _mm512_set1_epi8(qmin), hi = _mm512_set1_epi8(qmax);
  const bool full = lane_group_full(d, mask);
  uint8_t* p[16];
  for (int L = 0; L < 16; ++L) p[L] = y8 + d[lane_of(L)].row * K;
  for (int j = 0; j < 4; ++j) {
    const int dp = j / 2, dq = j % 2;
    const int64_t at = (dp * ldo + dq) * K;
    __m512i x[4], c[4];
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g)
      x[g] = _mm512_maskz_min_epi8(
          ~__mmask64(0), _mm512_maskz_max_epi8(~__mmask64(0), _mm512_load_si512(obuf + j * 256 + g * 64), lo), hi);
    transpose16x16_u8<true>(x, c);
    if (full) {  // row L of the transpose: 128-bit lane L % 4 of c[L / 4]
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p[4 * g] + at), _mm512_maskz_extracti32x4_epi32(0xF, c[g], 0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p[4 * g + 1] + at), _mm512_maskz_extracti32x4_epi32(0xF, c[g], 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p[4 * g + 2] + at), _mm512_maskz_extracti32x4_epi32(0xF, c[g], 2));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p[4 * g + 3] + at), _mm512_maskz_extracti32x4_epi32(0xF, c[g], 3));
      }
      continue;
    }
    for (int L = 0; L < 16; ++L) {
      const TileOut& o = d[lane_of(L)];
      if (dp < o.np && dq < o.nq) _mm_mask_storeu_epi8(p[L] + at, mask, lane128(c[L / 4], L % 4));
    }
  }
}

// The residual codes of a group's outputs, the first channels (mask) at res8 + (row) K + k0 for each
// stored lane's pixel, as rbuf[j][k][lane] (0 where the lane's tile is not stored).
LOWBIT_AVX512 void lane_load_u8(const uint8_t* res8, const TileOut* d, int64_t K, int64_t ldo, __mmask16 mask,
                                uint8_t* rbuf) {
  if (lane_group_rows(d, mask, K)) return lane_load_u8_rows(res8, d[0].row, ldo, rbuf);
  const bool full = lane_group_full(d, mask);
  const uint8_t* p[16];
  for (int L = 0; L < 16; ++L) p[L] = res8 + d[lane_of(L)].row * K;
  for (int j = 0; j < 4; ++j) {
    const int dp = j / 2, dq = j % 2;
    const int64_t at = (dp * ldo + dq) * K;
    __m512i x[4];
    if (full) {
      auto row = [&](int L) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[L] + at)); };
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        __m512i v = _mm512_maskz_broadcast_i32x4(0x000F, row(4 * g));
        v = _mm512_maskz_inserti32x4(0xFFFF, v, row(4 * g + 1), 1);
        v = _mm512_maskz_inserti32x4(0xFFFF, v, row(4 * g + 2), 2);
        x[g] = _mm512_maskz_inserti32x4(0xFFFF, v, row(4 * g + 3), 3);
      }
    } else {
      for (int g = 0; g < 4; ++g) x[g] = _mm512_setzero_si512();
      for (int L = 0; L < 16; ++L) {
        const TileOut& o = d[lane_of(L)];
        if (dp < o.np && dq < o.nq) x[L / 4] = with_lane128(x[L / 4], L % 4, _mm_maskz_loadu_epi8(mask, p[L] + at));
      }
    }
    __m512i c[4];
    transpose16x16_u8(x, c);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) _mm512_store_si512(rbuf + j * 256 + g * 64, c[g]);
  }
}

// out[i] >>= 2 (arithmetic; exact here) for i < n.
void shift_right2(int32_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] >>= 2;
}

// The requantization conv2d_winograd_u8s8u8 hands to the kernels when q has its (2f) constants and the
// residual is uint8 (or none): the output transform of the GEMM path applies it, and so does the
// lanes kernel where in_lanes (its int8 saturation then byte clamp: conv2d_winograd_u8s8u8).
struct FusedRequant {
  const Requantization* q = nullptr;
  const uint8_t* residual_u8 = nullptr;
  uint8_t* y = nullptr;
  bool in_lanes = false;
};

// The convolution by blocks of whole tile rows: for each block, the results of its output pixels
// [r0, r0 + rows) into y + r0 K (y given) or a buffer of the calling thread, then epilogue(r0, rows,
// results) on that thread. With fr, the GEMM path's blocks, and where fr->in_lanes the blocks the
// lanes kernel runs without clamped entries, are requantized there into fr->y instead (no epilogue call).
template <class Epilogue>
void winograd_blocks(const Conv2dGeometry& g, const uint8_t* x, uint8_t zp, const WinogradPackedS8& w, int32_t* y,
                     const char* op, Epilogue&& epilogue, const FusedRequant* fr = nullptr) {
  check_geometry(g, op);
  LOWBIT_CHECK(w.C == g.C && w.K == g.K && w.compensation.size() == size_t(4 * g.K), op,
               ": packed weights are for C=", w.C, " K=", w.K, ", the geometry has C=", g.C, " K=", g.K);
  LOWBIT_CHECK(zp <= w.max_code, op, ": zero point ", int(zp), " beyond the pack's largest input code ", w.max_code);
  if (g.N == 0) return;
  const Tiling t(g);
  const int64_t K = g.K, cp = t.cp, P = t.P, Q = t.Q;
  const bool simd = avx512_enabled();
  // The AVX-512 input transforms read x itself when its pixels are whole channel quads (16 or 32
  // channels: pad_w 1 and W a multiple of 64 / cp, the aligned loads); else a padded copy
  // [N][Hp][Wp][cp] (the zero point around x, added channels 0).
  const bool rows_aligned = (cp == 16 || cp == 32) && g.pad_w == 1 && g.W % (64 / cp) == 0;
  const bool direct = simd && cp == g.C && (rows_aligned || (cp != 16 && cp != 32));
  detail::PaddedU8 padded;
  const uint8_t* xp = direct ? nullptr : padded.fill(g, x, zp, cp, t.Hp, t.Wp);
  const int32_t o2 = int32_t(2 * w.max_code);
  // The fused kernel for C' <= 32, the GEMMs for wider layers (measured: see the top of this file).
  const bool fused = int8_vnni_enabled() && fused_enabled() && cp <= 32;
  const bool lanes_ok = fused && (cp == 16 || cp == 32);  // tiles in the vector lanes, in whole groups of 16
  // Blocks of rb tile rows: V and M within ~96 KiB, and at least ~8 blocks when there are 8 tile rows.
  const int64_t tile_bytes = 16 * (cp + 4 * K);
  const int64_t rows_total = g.N * t.TH;
  // With the lanes kernel, rb a multiple of 16 / gcd(TW', 16) tile rows (whole groups of 16 tiles).
  const int64_t unit = lanes_ok ? 16 / std::gcd<int64_t>(t.TWp, 16) : 1;
  int64_t rb = std::clamp<int64_t>((int64_t(96) << 10) / (tile_bytes * t.TWp), 1, (rows_total + 7) / 8);
  if (rb > unit)
    rb = rb / unit * unit;
  else if (rows_total >= unit)
    rb = unit;
  const int64_t blocks = (rows_total + rb - 1) / rb;
  parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t tr0 = b * rb, tr1 = std::min(rows_total, tr0 + rb);
      const int64_t T = (tr1 - tr0) * t.TWp;
      const int64_t n0 = tr0 / t.TH, n1 = (tr1 - 1) / t.TH, th1 = (tr1 - 1) % t.TH;
      const int64_t r0 = (n0 * P + 2 * (tr0 % t.TH)) * Q, r1 = (n1 * P + std::min(P, 2 * th1 + 2)) * Q;
      // Positions vs = T cp + 64 bytes and ms = T K + 16 int32 apart: the 16 streams of a tile then fall
      // in different L1 sets (T K 4 is often a multiple of 4 KiB).
      const bool lanes = lanes_ok && T % 16 == 0;
      // The lanes kernel's V made in place: 16 channels on 32-pixel rows (each tile row one group of 16
      // tiles), 32 channels on 16-pixel rows (each pair of tile rows of one image, TH even, one group).
      const bool row_groups = lanes && direct && cp == 16 && g.W == 32 && t.TWp == 16;
      const bool pair_groups = lanes && direct && cp == 32 && g.W == 16 && t.TWp == 8 && t.TH % 2 == 0;
      const int64_t vs = T * cp + 64, ms = T * K + 16;
      // (no V in tile order where the lanes kernel's V is made in place)
      const int64_t vbytes = row_groups || pair_groups ? 0 : round64(16 * vs),
                    mbytes = fused ? 0 : round64(16 * ms * 4);
      const int64_t obytes = y ? 0 : round64((r1 - r0) * K * 4);
      const int64_t dbytes = round64(T * int64_t(sizeof(TileOut)));
      const int64_t vlbytes = lanes_ok ? round64(16 * T * cp) : 0;
      uint8_t* scratch = block_scratch(vbytes + mbytes + obytes + dbytes + 4 * 16 * 16 * (4 + 2) + vlbytes);
      int32_t* ybuf = reinterpret_cast<int32_t*>(scratch + vbytes + mbytes + obytes + dbytes);  // [4][16][16]
      uint8_t* obuf = reinterpret_cast<uint8_t*>(ybuf + 4 * 16 * 16);                           // [4][16][16]
      uint8_t* rbuf = obuf + 4 * 16 * 16;                                                       // [4][16][16]
      uint8_t* vl = rbuf + 4 * 16 * 16;  // the lanes kernel's V: [group][16][quad][lane][4 channels]
      uint8_t* v = scratch;
      int32_t* m = reinterpret_cast<int32_t*>(scratch + vbytes);
      int32_t* out = y ? y + r0 * K : reinterpret_cast<int32_t*>(scratch + vbytes + mbytes);
      for (int64_t tr = tr0; (row_groups || pair_groups) && tr < tr1;) {  // by runs of tile rows of one image
        const int64_t n = tr / t.TH, th = tr % t.TH, th1 = std::min(t.TH, th + tr1 - tr);
        const uint8_t* image = x + n * g.H * g.W * cp;
        uint8_t* group = vl + (tr - tr0) * t.TWp * 16 * cp;  // 16 tiles a group
        row_groups ? input_rows_lanes16_avx512(image, g.H, th, th1, zp, o2, group)
                   : input_rows_lanes32_avx512(image, g.H, th, th1, zp, o2, group);
        tr += th1 - th;
      }
      for (int64_t tr = tr0; !row_groups && !pair_groups && tr < tr1; ++tr) {  // the input transform
        const int64_t n = tr / t.TH, th = tr % t.TH;
        uint8_t* dst = v + (tr - tr0) * t.TWp * cp;
        if (!simd) {
          input_row_portable(xp + (n * t.Hp + 2 * th) * t.Wp * cp, t.Wp, cp, t.TW, o2, dst, vs);
          continue;
        }
        if ((cp == 16 || cp == 32) && !direct) {
          const uint8_t* src = xp + (n * t.Hp + 2 * th) * t.Wp * cp;
          cp == 16 ? input_row_padded_avx512<16>(src, t.Wp, t.TWp, o2, dst, vs)
                   : input_row_padded_avx512<32>(src, t.Wp, t.TWp, o2, dst, vs);
          continue;
        }
        PatchRows rows;  // patch row i = padded row 2 th + i
        rows.zp = zp;
        for (int i = 0; i < 4; ++i) {
          const int64_t h = 2 * th + i - g.pad_h;  // its row of x
          if (!direct)
            rows.row[i] = reinterpret_cast<uintptr_t>(xp + ((n * t.Hp + 2 * th + i) * t.Wp) * cp);
          else if (h >= 0 && h < g.H)
            rows.row[i] = reinterpret_cast<uintptr_t>(x + (n * g.H + h) * g.W * cp) - uintptr_t(g.pad_w * cp);
        }
        if (direct) rows.lo = g.pad_w, rows.hi = g.pad_w + g.W;
        if (cp == 16)
          input_row_aligned_avx512<16>(rows, t.TWp, o2, dst, vs);
        else if (cp == 32)
          input_row_aligned_avx512<32>(rows, t.TWp, o2, dst, vs);
        else
          input_row_avx512(rows, cp, t.TW, o2, dst, vs);
      }
      if (lanes && !row_groups && !pair_groups)
        cp == 16 ? lanes_transpose<16>(v, vs, T, vl) : lanes_transpose<32>(v, vs, T, vl);
      if (fused) {                                       // VNNI: products and output transform in registers
        const bool raw = !lanes && !w.overflow.empty();  // the fused kernels' clamped entries: after them
        const int64_t nr = w.u[0].nr, kp = w.u[0].k_padded;
        const FusedFn(*kernels)[kFusedMT] = fused_kernels(cp);
        TileOut* dest = reinterpret_cast<TileOut*>(scratch + vbytes + mbytes + obytes);  // per V row (np 0: padding)
        for (int64_t tr = tr0, i = 0; tr < tr1; ++tr) {
          const int64_t n = tr / t.TH, th = tr % t.TH;
          for (int64_t tw = 0; tw < t.TWp; ++tw, ++i) {
            const int64_t row = (n * P + 2 * th) * Q + 2 * tw;
            dest[i] = tw < t.TW ? TileOut{out + (row - r0) * K, int(std::min<int64_t>(2, P - 2 * th)),
                                          int(std::min<int64_t>(2, Q - 2 * tw)), row}
                                : TileOut{nullptr, 0, 0, 0};
          }
        }
        const bool lane_requant = lanes && fr && fr->in_lanes;
        const int lane_mode = !lane_requant ? kLaneShift : fr->residual_u8 ? kLaneReqRes : kLaneReq;
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
          const int64_t nk = std::min<int64_t>(16, K - k0);
          const __mmask16 mask = nk == 16 ? __mmask16(0xFFFF) : __mmask16((1u << nk) - 1u);
          const int8_t* bp[16];
          for (int pos = 0; pos < 16; ++pos)
            bp[pos] = w.u[size_t(pos)].data.data() + (k0 / nr) * kp * nr + (k0 % nr) * 4;
          if (lanes) {
            LaneOut lo;
            lo.comp = w.compensation.data() + k0, lo.K = K, lo.k0 = k0, lo.ybuf = ybuf, lo.obuf = obuf, lo.rbuf = rbuf;
            if (lane_requant) {
              const Requantization& q = *fr->q;
              lo.mul = q.multiplier_f32.data() + k0, lo.off = q.offset_f32.data() + k0;
              lo.rmul = fr->residual_u8 ? q.residual_multiplier_f32.data() + k0 : nullptr;
            }
            for (int64_t g = 0; g < T; g += 16) {
              const TileOut* dg = dest + g;
              if (lane_mode == kLaneReqRes) lane_load_u8(fr->residual_u8 + k0, dg, K, Q, mask, rbuf);
              for (int64_t kc = 0; kc < nk; kc += 4) {
                const int32_t* start = w.lane_overflow_start.data() + (k0 + kc) / 4;
                lo.overflow = w.lane_overflow.data() + start[0], lo.overflows = start[1] - start[0];
                kLane[cp / 16 - 1][lane_mode][std::min<int64_t>(4, nk - kc) - 1](
                    vl + g * 16 * cp, w.lane_u.data() + (k0 + kc) * 16 * (cp / 4), lo, kc);
              }
              if (lane_requant)
                lane_store_u8(obuf, dg, K, Q, mask, int8_t(fr->q->qmin), int8_t(fr->q->qmax), fr->y + k0);
              else
                lane_store(ybuf, dg, k0, K, Q, mask);
            }
            continue;
          }
          for (int64_t t0 = 0; t0 < T; t0 += kFusedMT) {  // groups of consecutive V rows (padding tiles not stored)
            const int mt = int(std::min<int64_t>(kFusedMT, T - t0));
            TileOut to[kFusedMT];
            for (int i = 0; i < mt; ++i) {
              const TileOut& d = dest[t0 + i];
              to[i] = {d.np ? d.out + k0 : nullptr, d.np, d.nq};
            }
            kernels[raw][mt - 1](v + t0 * cp, vs, cp, bp, nr * 4, w.compensation.data() + k0, K, mask, Q, to);
          }
        }
        if (raw) {  // the clamped entries' excess, coefficient A^T[dp][a] A^T[dq][b] per output, then / 4
          for (const auto& e : w.overflow) {
            const int a = e.pos / 4, bcol = e.pos % 4;
            for (int64_t tr = tr0; tr < tr1; ++tr) {
              const int64_t n = tr / t.TH, th = tr % t.TH;
              const int np = int(std::min<int64_t>(2, P - 2 * th));
              for (int64_t tw = 0; tw < t.TW; ++tw) {
                const int nq = int(std::min<int64_t>(2, Q - 2 * tw));
                const int32_t val = e.excess * int32_t(v[e.pos * vs + ((tr - tr0) * t.TWp + tw) * cp + e.c]);
                int32_t* o = out + ((n * P + 2 * th) * Q + 2 * tw - r0) * K + e.k;
                for (int dp = 0; dp < np; ++dp)
                  for (int dq = 0; dq < nq; ++dq) o[(dp * Q + dq) * K] += kAT[dp][a] * kAT[dq][bcol] * val;
              }
            }
          }
          shift_right2(out, (r1 - r0) * K);
        }
        if (!lane_requant) epilogue(r0, r1 - r0, out);
        continue;
      }
      for (int pos = 0; pos < 16; ++pos) {  // the 16 GEMMs
        detail::SegmentedA a;
        a.a = v + pos * vs;
        a.rows = T;
        a.lda = cp;
        a.seg_len = cp;
        detail::gemm_u8s8s32_segmented(a, w.u[size_t(pos)], m + pos * ms, K);
      }
      for (const auto& e : w.overflow) {  // the clamped entries' excess
        const uint8_t* vp = v + e.pos * vs + e.c;
        int32_t* mp = m + e.pos * ms + e.k;
        for (int64_t i = 0; i < T; ++i) mp[i * K] += e.excess * int32_t(vp[i * cp]);
      }
      const bool requant = simd && fr;          // the output transform and the requantization in one pass
      for (int64_t tr = tr0; tr < tr1; ++tr) {  // the output transform
        const int64_t n = tr / t.TH, th = tr % t.TH;
        const int np = int(std::min<int64_t>(2, P - 2 * th));
        for (int64_t tw = 0; tw < t.TW; ++tw) {
          const int nq = int(std::min<int64_t>(2, Q - 2 * tw));
          const int32_t* mt = m + ((tr - tr0) * t.TWp + tw) * K;
          const int64_t row = (n * P + 2 * th) * Q + 2 * tw;
          if (requant)
            output_tile_requant_avx512(mt, ms, w.compensation.data(), K, Q, np, nq, *fr->q,
                                       fr->residual_u8 ? fr->residual_u8 + row * K : nullptr, fr->y + row * K);
          else if (simd)
            output_tile_avx512(mt, ms, w.compensation.data(), K, Q, np, nq, out + (row - r0) * K);
          else
            output_tile_portable(mt, ms, w.compensation.data(), K, Q, np, nq, out + (row - r0) * K);
        }
      }
      if (!requant) epilogue(r0, r1 - r0, out);
    }
  });
}

}  // namespace

void set_winograd_fused_vnni(bool on) { g_fused.store(on, std::memory_order_relaxed); }

bool conv_winograd_geometry(const Conv2dGeometry& g) {
  return g.R == 3 && g.S == 3 && g.stride_h == 1 && g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1 && g.groups == 1;
}

int64_t conv_winograd_padded_bytes_per_image(const Conv2dGeometry& g) {
  const Tiling t(g);
  return t.Hp * t.Wp * t.cp;
}

bool pack_conv_weights_winograd_s8(const Conv2dGeometry& g, const int8_t* w, int64_t max_code, WinogradPackedS8& out) {
  if (!conv_winograd_geometry(g) || g.C < 1 || g.K < 1 || max_code < 0 || max_code > 63) return false;
  const int64_t C = g.C, K = g.K, cp = (C + 3) / 4 * 4;
  WinogradPackedS8 p;
  p.C = C, p.K = K, p.max_code = max_code;
  for (int pos = 0; pos < 16; ++pos) p.offset[size_t(pos)] = pos == kCentre ? 0 : int32_t(2 * max_code);
  std::vector<int8_t> clamped(size_t(16 * K * cp), 0);  // [pos][k][c']
  std::vector<int64_t> sum(size_t(16 * K), 0);          // [k][pos]: sum_c U'
  int64_t most = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      int64_t u[16];
      weight_transform(w + k * 9 * C + c, C, u);
      for (int pos = 0; pos < 16; ++pos) {
        const int64_t v = u[pos], cl = std::clamp<int64_t>(v, -127, 127);
        most = std::max(most, std::abs(v));
        sum[size_t(k * 16 + pos)] += v;
        clamped[size_t((pos * K + k) * cp + c)] = int8_t(cl);
        if (v != cl) p.overflow.push_back({pos, int32_t(c), int32_t(k), int32_t(v - cl)});
      }
    }
  // Few clamped entries (each costs a pass over the block's tiles: at most 16 + 1/512 of U'), and the
  // tile sums within int32: |A^T M A| <= 9 C max|U'| 4M, |compensation| <= 9 C max|U'| 2M.
  if (int64_t(p.overflow.size()) > 16 + 16 * K * C / 512) return false;
  if (9 * C * most * 6 * std::max<int64_t>(max_code, 1) >= (int64_t(1) << 31)) return false;
  std::sort(p.overflow.begin(), p.overflow.end(),
            [](const auto& a, const auto& b) { return a.pos != b.pos ? a.pos < b.pos : a.c < b.c; });
  p.compensation.assign(size_t(4 * K), 0);
  for (int64_t k = 0; k < K; ++k) {
    int64_t m[16], y[4];
    for (int pos = 0; pos < 16; ++pos) m[pos] = p.offset[size_t(pos)] * sum[size_t(k * 16 + pos)];
    output_transform(m, y);
    for (int j = 0; j < 4; ++j) p.compensation[size_t(j * K + k)] = int32_t(y[j]);
  }
  for (int pos = 0; pos < 16; ++pos)
    p.u[size_t(pos)] = pack_b_s8(cp, K, clamped.data() + pos * K * cp, cp, /*trans_b=*/true);
  if (cp == 16 || cp == 32) {  // the lanes kernel's broadcasts (signed): [k / 4][pos][k % 4][quad]
    const int64_t Kp = (K + 3) / 4 * 4;
    std::vector<int8_t> signed_u(size_t(16 * Kp * cp), 0);  // [k / 4][pos][k % 4][c'], K padded with 0s
    for (int pos = 0; pos < 16; ++pos)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < cp; ++c)
          signed_u[size_t(((k / 4 * 16 + pos) * 4 + k % 4) * cp + c)] =
              int8_t(lane_sign(pos) * clamped[size_t((pos * K + k) * cp + c)]);
    p.lane_u.resize(signed_u.size() / 4);
    std::memcpy(p.lane_u.data(), signed_u.data(), signed_u.size());
    p.lane_overflow = p.overflow;
    std::stable_sort(p.lane_overflow.begin(), p.lane_overflow.end(),
                     [](const auto& a, const auto& b) { return a.k < b.k; });
    p.lane_overflow_start.assign(size_t(Kp / 4 + 1), 0);
    for (const auto& e : p.lane_overflow) ++p.lane_overflow_start[size_t(e.k / 4 + 1)];
    for (size_t i = 1; i < p.lane_overflow_start.size(); ++i) p.lane_overflow_start[i] += p.lane_overflow_start[i - 1];
  }
  out = std::move(p);
  return true;
}

void conv2d_winograd_u8s8s32(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const WinogradPackedS8& w,
                             int32_t* y) {
  winograd_blocks(g, x, x_zero_point, w, y, "conv2d_winograd_u8s8s32", [](int64_t, int64_t, const int32_t*) {});
}

void conv2d_winograd_u8s8s32_blocks(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point,
                                    const WinogradPackedS8& w, const ConvBlockEpilogue& epilogue) {
  winograd_blocks(g, x, x_zero_point, w, nullptr, "conv2d_winograd_u8s8s32_blocks", epilogue);
}

void conv2d_winograd_u8s8u8(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const WinogradPackedS8& w,
                            const Requantization& q, const int32_t* residual_s32, const uint8_t* residual_u8,
                            uint8_t* y) {
  const char* op = "conv2d_winograd_u8s8u8";
  detail::check_requantization(q, g.K, residual_s32 != nullptr, residual_u8 != nullptr, op);
  const int64_t K = g.K;
  // The kernels requantize their results at once where the float path (2f) holds (requant.h); the
  // lanes kernel for codes within int8 and |u| < 2^30 for every declared accumulator and residual
  // (its clamp: above), and multipliers whose quarter is exact (0 or normal: it multiplies 4 acc).
  const bool fused = !q.offset_f32.empty() && !residual_s32;
  bool in_lanes = fused && q.qmin >= 0 && q.qmax <= 127;
  for (int64_t k = 0; in_lanes && k < K; ++k) {
    const double rm = residual_u8 ? std::abs(double(q.residual_multiplier_f32[size_t(k)])) : 0.0;
    const float m = std::abs(q.multiplier_f32[size_t(k)]);
    in_lanes =
        double(q.acc_bound) * double(m) + std::abs(double(q.offset_f32[size_t(k)])) + double(q.residual_bound) * rm <
            double(1 << 30) &&
        (m == 0 || m >= 0x1p-120f);
  }
  const FusedRequant fr{&q, residual_u8, y, in_lanes};
  winograd_blocks(
      g, x, x_zero_point, w, nullptr, op,
      [&](int64_t r0, int64_t rows, const int32_t* acc) {
        detail::requantize_block(q, K, r0, rows, acc, residual_s32, residual_u8, y);
      },
      fused ? &fr : nullptr);
}

void conv2d_winograd_u8s8s32_ref(const Conv2dGeometry& g, const uint8_t* x, uint8_t x_zero_point, const int8_t* w,
                                 int32_t* y) {
  check_geometry(g, "conv2d_winograd_u8s8s32_ref");
  const int64_t P = g.P(), Q = g.Q(), C = g.C, K = g.K;
  std::vector<int64_t> u(size_t(K * C * 16));  // [k][c][pos]
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) weight_transform(w + k * 9 * C + c, C, u.data() + (k * C + c) * 16);
  std::vector<int64_t> v(size_t(C * 16));  // one tile's V, [c][pos]
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t p0 = 0; p0 < P; p0 += 2)
      for (int64_t q0 = 0; q0 < Q; q0 += 2) {
        for (int64_t c = 0; c < C; ++c) {
          int64_t d[4][4], e[4][4];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
              const int64_t ih = p0 - g.pad_h + i, iw = q0 - g.pad_w + j;
              const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
              d[i][j] = inside ? x[((n * g.H + ih) * g.W + iw) * C + c] : x_zero_point;
            }
          input_transform(d, e);
          for (int pos = 0; pos < 16; ++pos) v[size_t(c * 16 + pos)] = e[pos / 4][pos % 4];
        }
        for (int64_t k = 0; k < K; ++k) {
          int64_t m[16] = {}, s[4];
          for (int64_t c = 0; c < C; ++c)
            for (int pos = 0; pos < 16; ++pos) m[pos] += u[size_t((k * C + c) * 16 + pos)] * v[size_t(c * 16 + pos)];
          output_transform(m, s);
          for (int j = 0; j < 4; ++j) {
            const int64_t p = p0 + j / 2, q = q0 + j % 2;
            if (p >= P || q >= Q) continue;
            LOWBIT_CHECK(s[j] % 4 == 0, "conv2d_winograd_u8s8s32_ref: a tile sum ", s[j], " is not divisible by 4");
            const int64_t r = s[j] / 4;
            LOWBIT_CHECK(r >= INT32_MIN && r <= INT32_MAX, "conv2d_winograd_u8s8s32_ref: y = ", r,
                         " does not fit int32");
            y[((n * P + p) * Q + q) * K + k] = int32_t(r);
          }
        }
      }
}

}  // namespace lowbit::kernels
