// Writers of small data-set files for the tests and the fuzzers' seed corpora (tests/fuzz/): IDX
// images and labels, CIFAR records and MAT v5 (SVHN) files, all filled from pixel_formula so a
// reader's output can be checked pixel by pixel.
#pragma once

#include <stb/stb_image_write.h>  // declarations; one translation unit defines STB_IMAGE_WRITE_IMPLEMENTATION

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/io.h"

namespace lowbit::fixtures {

using data::Bytes;
using data::zlib_compress;

inline void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
inline void put_le32(Bytes& b, uint32_t v) {
  for (int s = 0; s <= 24; s += 8) b.push_back(uint8_t(v >> s));
}

// Pixel value used by the synthetic data sets: a fixed formula of (sample, row, col, channel).
inline uint8_t pixel_formula(int64_t n, int64_t y, int64_t x, int64_t c) {
  return uint8_t((n * 37 + y * 11 + x * 5 + c * 83) & 255);
}

inline Bytes idx_images(int64_t n, int64_t h, int64_t w) {
  Bytes b;
  put_be32(b, 0x00000803);
  put_be32(b, uint32_t(n));
  put_be32(b, uint32_t(h));
  put_be32(b, uint32_t(w));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) b.push_back(pixel_formula(i, y, x, 0));
  return b;
}

inline Bytes idx_labels(const std::vector<uint8_t>& labels) {
  Bytes b;
  put_be32(b, 0x00000801);
  put_be32(b, uint32_t(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// CIFAR records: label bytes then R, G, B planes of pixel_formula(first + i, ...).
inline Bytes cifar_records(const std::vector<std::vector<uint8_t>>& labels, int64_t first = 0) {
  Bytes b;
  for (size_t i = 0; i < labels.size(); ++i) {
    b.insert(b.end(), labels[i].begin(), labels[i].end());
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x) b.push_back(pixel_formula(first + int64_t(i), y, x, c));
  }
  return b;
}

// ---- MAT v5 writer (MathWorks "MAT-File Format"): little-endian, elements padded to 8 bytes ----
enum : uint32_t {
  kMiInt8 = 1,
  kMiUint8 = 2,
  kMiInt32 = 5,
  kMiUint32 = 6,
  kMiDouble = 9,
  kMiMatrix = 14,
  kMiCompressed = 15
};

inline void put_element(Bytes& out, uint32_t type, const Bytes& data) {
  if (data.size() <= 4) {  // small data element format, as MATLAB writes short names
    put_le32(out, (uint32_t(data.size()) << 16) | type);
    Bytes padded = data;
    padded.resize(4, 0);
    out.insert(out.end(), padded.begin(), padded.end());
    return;
  }
  put_le32(out, type);
  put_le32(out, uint32_t(data.size()));
  out.insert(out.end(), data.begin(), data.end());
  while (out.size() % 8) out.push_back(0);
}

inline Bytes mat_matrix(const std::string& name, uint32_t mx_class, const std::vector<int32_t>& dims, uint32_t storage,
                        const Bytes& values) {
  Bytes body, flags, dimb;
  put_le32(flags, mx_class);
  put_le32(flags, 0);
  put_element(body, kMiUint32, flags);
  for (int32_t d : dims) put_le32(dimb, uint32_t(d));
  put_element(body, kMiInt32, dimb);
  put_element(body, kMiInt8, Bytes(name.begin(), name.end()));
  put_element(body, storage, values);
  Bytes el;
  put_le32(el, kMiMatrix);
  put_le32(el, uint32_t(body.size()));
  el.insert(el.end(), body.begin(), body.end());
  return el;
}

inline Bytes mat_header() {
  Bytes b(128, uint8_t(' '));
  const char text[] = "MATLAB 5.0 MAT-file, written by lowbit's test_data";
  std::memcpy(b.data(), text, sizeof text - 1);
  std::fill(b.begin() + 116, b.begin() + 124, uint8_t(0));  // subsystem offset
  b[124] = 0x00;
  b[125] = 0x01;  // version 0x0100, little-endian
  b[126] = 'I';
  b[127] = 'M';
  return b;
}

// An SVHN-like file: X 32x32x3xN uint8 column-major from pixel_formula, y Nx1 (double or uint8).
inline Bytes svhn_mat(const std::vector<int>& labels, bool compressed, bool y_double, bool with_y = true) {
  const int32_t n = int32_t(labels.size());
  Bytes x;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t w = 0; w < 32; ++w)
        for (int64_t h = 0; h < 32; ++h) x.push_back(pixel_formula(i, h, w, c));
  Bytes y;
  for (int v : labels) {
    if (y_double) {
      const double d = v;
      const auto* p = reinterpret_cast<const uint8_t*>(&d);
      y.insert(y.end(), p, p + 8);
    } else {
      y.push_back(uint8_t(v));
    }
  }
  std::vector<Bytes> vars = {mat_matrix("X", 9 /*mxUINT8*/, {32, 32, 3, n}, kMiUint8, x)};
  if (with_y) vars.push_back(mat_matrix("y", y_double ? 6 : 9, {n, 1}, y_double ? kMiDouble : kMiUint8, y));
  Bytes file = mat_header();
  for (const Bytes& v : vars) {
    if (compressed) {
      const Bytes z = zlib_compress(v.data(), v.size());
      put_le32(file, kMiCompressed);
      put_le32(file, uint32_t(z.size()));
      file.insert(file.end(), z.begin(), z.end());
    } else {
      file.insert(file.end(), v.begin(), v.end());
    }
  }
  return file;
}

inline Bytes truncated(const Bytes& b, size_t keep) { return Bytes(b.begin(), b.begin() + std::ptrdiff_t(keep)); }

// h x w x c pixels of sample n from pixel_formula, row-major (HWC).
inline std::vector<uint8_t> formula_image(int64_t n, int64_t h, int64_t w, int64_t c) {
  std::vector<uint8_t> px;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) px.push_back(pixel_formula(n, y, x, k));
  return px;
}

// A w x h x c image (HWC pixels) encoded in memory with stb_image_write as "png", "bmp" or "jpg"
// (quality 90); throws lowbit::Error when stb_image_write fails.
inline Bytes encode_image(const std::string& format, int w, int h, int c, const std::vector<uint8_t>& px) {
  Bytes out;
  auto sink = [](void* ctx, void* data, int size) {
    auto* o = static_cast<Bytes*>(ctx);
    o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  int ok = 0;
  if (format == "png") ok = stbi_write_png_to_func(sink, &out, w, h, c, px.data(), w * c);
  if (format == "bmp") ok = stbi_write_bmp_to_func(sink, &out, w, h, c, px.data());
  if (format == "jpg") ok = stbi_write_jpg_to_func(sink, &out, w, h, c, px.data(), 90);
  if (!ok) throw Error("encode_image: stb_image_write cannot encode " + format);
  return out;
}

}  // namespace lowbit::fixtures
