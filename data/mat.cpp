// SVHN reader: MATLAB 5.0 MAT-file ("Level 5"), as MATLAB -v5/-v7 and scipy.io.savemat write it.
// Layout (MathWorks, "MAT-File Format", R2023 doc, ch. 1): a 128-byte header (116 text bytes,
// 8 subsystem bytes, version 0x0100, endian indicator "IM" for little-endian), then data elements.
// Each element has an 8-byte tag (uint32 type, uint32 byte count) or a 4-byte "small element" tag
// (uint16 byte count << 16 | uint16 type) with up to 4 data bytes. Elements inside a matrix are
// padded to 8 bytes; a top-level miCOMPRESSED element holds one zlib stream that inflates to one
// whole element (normally a miMATRIX).
#include <cmath>
#include <cstring>
#include <optional>

#include "core/error.h"
#include "data/dataset.h"
#include "data/io.h"

namespace lowbit::data {

namespace {

enum : uint32_t {
  miINT8 = 1,
  miUINT8 = 2,
  miINT16 = 3,
  miUINT16 = 4,
  miINT32 = 5,
  miUINT32 = 6,
  miSINGLE = 7,
  miDOUBLE = 9,
  miINT64 = 12,
  miUINT64 = 13,
  miMATRIX = 14,
  miCOMPRESSED = 15,
  miUTF8 = 16,
};

size_t mi_size(uint32_t type) {
  switch (type) {
    case miINT8:
    case miUINT8:
    case miUTF8: return 1;
    case miINT16:
    case miUINT16: return 2;
    case miINT32:
    case miUINT32:
    case miSINGLE: return 4;
    case miDOUBLE:
    case miINT64:
    case miUINT64: return 8;
    default: return 0;
  }
}

struct Element {
  uint32_t type = 0;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t next = 0;  // offset of the following element in the enclosing buffer
};

// Parses the element tag at `pos` of buf[0, end). `padded`: the next element starts 8-aligned.
Element parse_element(const uint8_t* buf, size_t pos, size_t end, bool padded, const std::string& where) {
  LOWBIT_CHECK(pos + 8 <= end, "read_svhn_mat: ", where, ": truncated: element tag at byte ", pos, " needs 8 bytes, ",
               end - pos, " left");
  Element e;
  const uint32_t first = load_le32(buf + pos);
  if (first >> 16) {  // small data element
    e.type = first & 0xffff;
    e.size = first >> 16;
    LOWBIT_CHECK(e.size <= 4, "read_svhn_mat: ", where, ": malformed small element at byte ", pos, " (", e.size,
                 " bytes)");
    e.data = buf + pos + 4;
    e.next = pos + 8;
    return e;
  }
  e.type = first;
  e.size = load_le32(buf + pos + 4);
  LOWBIT_CHECK(e.size <= end - pos - 8, "read_svhn_mat: ", where, ": truncated: element of type ", e.type, " at byte ",
               pos, " declares ", e.size, " bytes, only ", end - pos - 8, " left");
  e.data = buf + pos + 8;
  e.next = pos + 8 + (padded ? (e.size + 7) / 8 * 8 : e.size);
  if (e.next > end) e.next = end;  // the last element's padding may be absent
  return e;
}

struct MatArray {
  std::string name;
  uint32_t mx_class = 0;
  std::vector<int64_t> dims;
  uint32_t storage_type = 0;  // mi* type of the real part
  const uint8_t* data = nullptr;
  int64_t count = 0;
  Bytes owned;  // inflated bytes of a compressed element (data points into it)
};

double value_at(uint32_t type, const uint8_t* p, int64_t i) {
  switch (type) {
    case miINT8: return double(int8_t(p[i]));
    case miUINT8: return double(p[i]);
    case miINT16: {
      int16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return v;
    }
    case miUINT16: {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return v;
    }
    case miINT32: {
      int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case miUINT32: {
      uint32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case miSINGLE: {
      float v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case miDOUBLE: {
      double v;
      std::memcpy(&v, p + 8 * i, 8);
      return v;
    }
    case miINT64: {
      int64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      return double(v);
    }
    case miUINT64: {
      uint64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      return double(v);
    }
  }
  return NAN;
}

// Parses the body of a miMATRIX element: array flags, dimensions, name, real part.
MatArray parse_matrix(const uint8_t* buf, size_t size, const std::string& where) {
  MatArray a;
  Element flags = parse_element(buf, 0, size, true, where);
  LOWBIT_CHECK(flags.type == miUINT32 && flags.size == 8, "read_svhn_mat: ", where,
               ": malformed matrix: array flags element has type ", flags.type, " and ", flags.size, " bytes");
  const uint32_t f = load_le32(flags.data);
  a.mx_class = f & 0xff;
  const bool complex = f & 0x0800;
  Element dims = parse_element(buf, flags.next, size, true, where);
  LOWBIT_CHECK(dims.type == miINT32 && dims.size % 4 == 0 && dims.size >= 8, "read_svhn_mat: ", where,
               ": malformed matrix: dimensions element has type ", dims.type, " and ", dims.size, " bytes");
  a.count = 1;
  for (size_t d = 0; d < dims.size / 4; ++d) {
    const int32_t n = int32_t(load_le32(dims.data + 4 * d));
    LOWBIT_CHECK(n >= 0, "read_svhn_mat: ", where, ": negative dimension ", n);
    a.dims.push_back(n);
    // Checked before multiplying: the product of the dimensions must not overflow.
    LOWBIT_CHECK(n == 0 || a.count <= (int64_t(1) << 40) / n, "read_svhn_mat: ", where,
                 ": size overflow: array dimensions ", shape_str(a.dims), "... exceed 2^40 elements");
    a.count *= n;
  }
  Element name = parse_element(buf, dims.next, size, true, where);
  LOWBIT_CHECK(name.type == miINT8 || name.type == miUTF8, "read_svhn_mat: ", where,
               ": malformed matrix: name element has type ", name.type);
  a.name.assign(reinterpret_cast<const char*>(name.data), name.size);
  // Only numeric arrays (mxDOUBLE_CLASS 6 .. mxUINT64_CLASS 15) carry a plain real part.
  if (a.mx_class < 6 || a.mx_class > 15) return a;
  LOWBIT_CHECK(!complex, "read_svhn_mat: ", where, ": variable '", a.name, "' is complex");
  Element real = parse_element(buf, name.next, size, true, where);
  const size_t es = mi_size(real.type);
  LOWBIT_CHECK(es != 0, "read_svhn_mat: ", where, ": variable '", a.name, "' has unsupported storage type ", real.type);
  LOWBIT_CHECK(real.size == size_t(a.count) * es, "read_svhn_mat: ", where, ": truncated or malformed variable '",
               a.name, "': expected ", size_t(a.count) * es, " bytes of data for ", a.count, " elements, got ",
               real.size);
  a.storage_type = real.type;
  a.data = real.data;
  return a;
}

}  // namespace

ImageDataset read_svhn_mat(const std::string& path) {
  return read_svhn_mat_data(read_file_raw(path, "read_svhn_mat"), path);
}

ImageDataset read_svhn_mat_data(std::span<const uint8_t> file, const std::string& path) {
  Bytes storage;
  const std::span<const uint8_t> b = gunzip_if_gzip(file, storage, path, "read_svhn_mat");
  LOWBIT_CHECK(b.size() >= 128, "read_svhn_mat: ", path, ": truncated: ", b.size(),
               " bytes, shorter than the 128-byte MAT header");
  const bool v73 = std::memcmp(b.data(), "MATLAB 7.3", 10) == 0 || std::memcmp(b.data(), "\x89HDF", 4) == 0;
  LOWBIT_CHECK(!v73, "read_svhn_mat: ", path, ": MATLAB 7.3 (HDF5) file; save it with -v7 or -v6 instead");
  LOWBIT_CHECK(std::memcmp(b.data(), "MATLAB 5.0 MAT-file", 19) == 0, "read_svhn_mat: ", path,
               ": bad header: does not start with \"MATLAB 5.0 MAT-file\"");
  LOWBIT_CHECK(b[126] == 'I' && b[127] == 'M', "read_svhn_mat: ", path, ": bad endian indicator '", char(b[126]),
               char(b[127]), "' (only little-endian \"IM\" files are supported)");
  LOWBIT_CHECK(load_le16(b.data() + 124) == 0x0100, "read_svhn_mat: ", path, ": unsupported version 0x", std::hex,
               load_le16(b.data() + 124));

  std::optional<MatArray> X, y;
  size_t pos = 128;
  while (pos < b.size()) {
    Element e = parse_element(b.data(), pos, b.size(), false, path);
    pos = e.next;
    if (e.type == miMATRIX) {
      e.next = (e.next + 7) / 8 * 8;  // uncompressed top-level elements keep 8-byte alignment
      pos = std::min(e.next, b.size());
    }
    MatArray a;
    if (e.type == miCOMPRESSED) {
      Bytes inflated = zlib_decompress(e.data, e.size, "read_svhn_mat: " + path);
      Element inner = parse_element(inflated.data(), 0, inflated.size(), true, path + " (compressed element)");
      if (inner.type != miMATRIX) continue;
      a = parse_matrix(inner.data, inner.size, path);
      a.owned = std::move(inflated);  // vector move keeps the buffer, so a.data stays valid
    } else if (e.type == miMATRIX) {
      a = parse_matrix(e.data, e.size, path);
    } else {
      continue;  // other top-level elements are not variables we need
    }
    if (a.name == "X")
      X = std::move(a);
    else if (a.name == "y")
      y = std::move(a);
  }
  LOWBIT_CHECK(X.has_value(), "read_svhn_mat: ", path, ": no variable 'X' (expected 32x32x3xN uint8 images)");
  LOWBIT_CHECK(y.has_value(), "read_svhn_mat: ", path, ": no variable 'y' (expected Nx1 labels)");
  LOWBIT_CHECK(X->data != nullptr, "read_svhn_mat: ", path, ": variable 'X' is not a numeric array");
  LOWBIT_CHECK(y->data != nullptr, "read_svhn_mat: ", path, ": variable 'y' is not a numeric array");
  // MATLAB drops trailing singleton dimensions: a single image is 32x32x3.
  std::vector<int64_t> xd = X->dims;
  if (xd.size() == 3) xd.push_back(1);
  LOWBIT_CHECK(xd.size() == 4, "read_svhn_mat: ", path, ": X has ", X->dims.size(),
               " dimensions, expected 4 (HxWxCxN)");
  const int64_t H = xd[0], W = xd[1], C = xd[2], N = xd[3];
  LOWBIT_CHECK(N > 0, "read_svhn_mat: ", path, ": no images: X is ", shape_str(X->dims));
  LOWBIT_CHECK(H > 0 && W > 0 && C > 0, "read_svhn_mat: ", path, ": zero height, width or channels: X is ",
               shape_str(X->dims), " (HxWxCxN)");
  LOWBIT_CHECK(y->count == N && y->dims.size() == 2 && (y->dims[0] == 1 || y->dims[1] == 1), "read_svhn_mat: ", path,
               ": y has shape ", shape_str(y->dims), ", expected ", N, "x1 to match X's ", N, " images");

  ImageDataset ds;
  ds.images = Tensor::empty({N, H, W, C}, DType::u8);
  uint8_t* out = ds.images.data<uint8_t>();
  // Column-major X(h, w, c, n) sits at h + H*(w + W*(c + C*n)); we store [n][h][w][c].
  const bool bytes = X->storage_type == miUINT8;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t src = h + H * (w + W * (c + C * n));
          uint8_t v;
          if (bytes) {
            v = X->data[src];
          } else {
            const double d = value_at(X->storage_type, X->data, src);
            LOWBIT_CHECK(d >= 0 && d <= 255 && d == std::floor(d), "read_svhn_mat: ", path, ": X value ", d,
                         " at element ", src, " is not a pixel value in [0, 255]");
            v = uint8_t(d);
          }
          out[((n * H + h) * W + w) * C + c] = v;
        }
  ds.labels = Tensor::empty({N}, DType::i32);
  int32_t* l = ds.labels.data<int32_t>();
  for (int64_t n = 0; n < N; ++n) {
    const double d = value_at(y->storage_type, y->data, n);
    LOWBIT_CHECK(d >= 0 && d <= 10 && d == std::floor(d), "read_svhn_mat: ", path, ": label ", d, " of image ", n,
                 " outside 1..10 (10 = digit 0)");
    l[n] = d == 10 ? 0 : int32_t(d);
  }
  ds.num_classes = 10;
  ds.source = path;
  for (int i = 0; i < 10; ++i) ds.class_names.push_back(std::to_string(i));
  return ds;
}

}  // namespace lowbit::data
