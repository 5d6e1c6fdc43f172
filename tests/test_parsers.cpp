// Regression cases of the parsers' fuzzers (tests/fuzz, docs/reliability.md) and of the readers'
// named defects: every input a fuzzer found (a crash, undefined behaviour, an allocation before
// the size check) and every defect a data-set reader must name (zero images, zero height or width,
// counts that differ, labels out of range, truncation, size overflow) is rejected with a
// lowbit::Error naming the file and what is wrong.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "cli/options.h"
#include "core/serialize.h"
#include "data/dataset.h"
#include "data/io.h"
#include "data_fixtures.h"
#include "deploy/engine.h"
#include "test_util.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

using namespace lowbit;
using namespace lowbit::data;
using namespace lowbit::fixtures;
using namespace lowbit::testing;
namespace fs = std::filesystem;

namespace {

// An IDX images file with the given header sizes and `data_bytes` pixel bytes.
Bytes idx_header(std::vector<uint32_t> dims, size_t data_bytes, uint32_t magic = 0x00000803) {
  Bytes b;
  put_be32(b, magic);
  for (uint32_t d : dims) put_be32(b, d);
  b.resize(b.size() + data_bytes, 7);
  return b;
}

Bytes gzip_bytes(const Bytes& b, const std::string& scratch) {
  write_file_bytes(scratch, b, true);
  return read_file_raw(scratch, "test");
}

// A MAT v5 file holding X (uint8, the given dims and `values`) and y (uint8 labels).
Bytes mat_file(const std::vector<int32_t>& x_dims, const Bytes& x, const std::vector<int32_t>& y_dims, const Bytes& y) {
  Bytes file = mat_header();
  const Bytes vx = mat_matrix("X", 9, x_dims, kMiUint8, x), vy = mat_matrix("y", 9, y_dims, kMiUint8, y);
  file.insert(file.end(), vx.begin(), vx.end());
  file.insert(file.end(), vy.begin(), vy.end());
  return file;
}

Bytes encode_image(const char* format, int w, int h, int c) {
  return fixtures::encode_image(format, w, h, c, formula_image(0, h, w, c));
}

size_t find_bytes(const Bytes& b, const Bytes& what) {
  const auto it = std::search(b.begin(), b.end(), what.begin(), what.end());
  REQUIRE(it != b.end());
  return size_t(it - b.begin());
}

// A checkpoint file around `payload` with a valid header (size, CRC-32), as tests/fuzz/fuzz_checkpoint.cpp builds it.
std::string checkpoint_file(const Bytes& payload) {
  std::string file = "LOWBITCK";
  auto put = [&file](const auto& v) { file.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(kCheckpointVersion);
  put(uint32_t{0});
  put(uint64_t{payload.size()});
  put(uint32_t(crc32(crc32(0L, Z_NULL, 0), payload.data(), uInt(payload.size()))));
  file.append(payload.begin(), payload.end());
  return file;
}

template <class T>
void put_pod(Bytes& b, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof v);
}
void put_str(Bytes& b, const std::string& s) {
  put_pod(b, uint32_t(s.size()));
  b.insert(b.end(), s.begin(), s.end());
}

}  // namespace

// =============================================================================================
// IDX (fuzz_idx)
// =============================================================================================
TEST_CASE("read_idx: dimensions whose product overflows are a size overflow, not undefined behaviour") {
  // fuzz_idx on the original reader: "signed integer overflow: 34293489210 * 1696817506" (the
  // 2^40 check came after the multiplication).
  TempDir dir("idx_overflow");
  write_file_bytes(dir / "labels", idx_labels({1}));
  write_file_bytes(dir / "huge", idx_header({1u << 30, 1u << 9, 0x7fffffff}, 0));
  expect_error([&] { read_idx(dir / "huge", dir / "labels"); }, {"huge", "size overflow", "exceed 2^40"});
  write_file_bytes(dir / "sign", idx_header({1, 0x80000000u, 1}, 0));
  expect_error([&] { read_idx(dir / "sign", dir / "labels"); }, {"sign", "size overflow"});
}

TEST_CASE("read_idx: zero images, zero height or width, and counts that differ are named") {
  TempDir dir("idx_zero");
  write_file_bytes(dir / "labels0", idx_labels({}));
  write_file_bytes(dir / "labels2", idx_labels({1, 2}));
  // Accepted before, failing only later in Normalize ("standard deviation -nan must be positive").
  write_file_bytes(dir / "none", idx_header({0, 28, 28}, 0));
  expect_error([&] { read_idx(dir / "none", dir / "labels0"); }, {"none", "no images", "[0, 28, 28]"});
  write_file_bytes(dir / "flat", idx_header({2, 0, 28}, 0));
  expect_error([&] { read_idx(dir / "flat", dir / "labels2"); }, {"flat", "zero height or width", "2 images of 0x28"});
  write_file_bytes(dir / "thin", idx_header({2, 28, 0}, 0));
  expect_error([&] { read_idx(dir / "thin", dir / "labels2"); }, {"thin", "zero height or width"});
  write_file_bytes(dir / "three", idx_images(3, 2, 2));
  expect_error([&] { read_idx(dir / "three", dir / "labels2"); }, {"three", "3 images", "labels2", "2 labels"});
  write_file_bytes(dir / "labels_bad", idx_labels({1, 10, 2}));
  expect_error([&] { read_idx(dir / "three", dir / "labels_bad"); }, {"labels_bad", "label 10", "record 1"});
  expect_error([&] { read_idx(dir / "three", dir / "labels2", 0); }, {"num_classes 0"});
}

TEST_CASE("read_idx_data: the in-memory entry point names its inputs like the files") {
  const Bytes im = idx_images(2, 3, 4), lb = idx_labels({4, 2});
  const ImageDataset ds = read_idx_data(im, "a.idx", lb, "b.idx");
  CHECK(ds.images.shape() == Shape{2, 3, 4, 1});
  CHECK(ds.source == "a.idx");
  expect_error([&] { read_idx_data(lb, "a.idx", lb, "b.idx"); }, {"a.idx", "bad magic"});
  expect_error([&] { read_idx_data(im, "a.idx", Bytes(lb.begin(), lb.end() - 1), "b.idx"); }, {"b.idx", "truncated"});
}

// =============================================================================================
// gzip (every reader's files may be gzip; fuzz_idx, fuzz_cifar and fuzz_svhn_mat decode it)
// =============================================================================================
TEST_CASE("gzip: members concatenate, zero padding is accepted, other trailing bytes and cuts are named") {
  TempDir dir("gzip");
  const Bytes im = idx_images(3, 4, 3), lb = idx_labels({1, 9, 0});
  const Bytes a(im.begin(), im.begin() + 20), b(im.begin() + 20, im.end());
  Bytes two = gzip_bytes(a, dir / "s");
  const Bytes second = gzip_bytes(b, dir / "s");
  two.insert(two.end(), second.begin(), second.end());  // `cat a.gz b.gz`, as gzip(1) and zlib's gzread accept
  CHECK(read_idx_data(two, "two.gz", lb, "lb").images.shape() == Shape{3, 4, 3, 1});

  Bytes padded = gzip_bytes(im, dir / "s");
  padded.resize(padded.size() + 512, 0);  // e.g. a tape block
  CHECK(read_idx_data(padded, "padded.gz", lb, "lb").size() == 3);

  Bytes garbage = gzip_bytes(im, dir / "s");
  const size_t end = garbage.size();
  garbage.push_back('x');
  garbage.push_back('y');
  expect_error([&] { read_idx_data(garbage, "garbage.gz", lb, "lb"); },
               {"garbage.gz", "2 bytes after the end of the gzip stream", std::to_string(end)});

  const Bytes whole = gzip_bytes(im, dir / "s");
  const Bytes cut(whole.begin(), whole.end() - 12);
  expect_error([&] { read_idx_data(cut, "cut.gz", lb, "lb"); }, {"cut.gz", "truncated gzip stream"});
  Bytes corrupt = whole;
  corrupt[12] ^= 0xff;  // inside the deflate data
  expect_error([&] { read_idx_data(corrupt, "corrupt.gz", lb, "lb"); }, {"corrupt.gz", "gzip"});
  // A corrupt size trailer (ISIZE) only guides the first allocation: no huge allocation, same result.
  Bytes trailer = whole;
  trailer[trailer.size() - 1] = 0xff;
  expect_error([&] { read_idx_data(trailer, "trailer.gz", lb, "lb"); }, {"trailer.gz", "gzip"});
}

// =============================================================================================
// CIFAR (fuzz_cifar)
// =============================================================================================
TEST_CASE("read_cifar10/100: empty, truncated and out-of-range files are named") {
  expect_error([&] { read_cifar10_data({}, "empty.bin"); }, {"read_cifar10", "empty.bin", "empty file"});
  const Bytes one = cifar_records({{3}});
  expect_error([&] { read_cifar10_data(Bytes(one.begin(), one.end() - 1), "short.bin"); },
               {"short.bin", "truncated", "3073-byte records"});
  expect_error([&] { read_cifar10_data(cifar_records({{10}}), "label.bin"); }, {"label.bin", "label 10", "record 0"});
  expect_error([&] { read_cifar100_data(cifar_records({{2, 100}}), "fine.bin"); }, {"fine.bin", "label 100"});
  expect_error([&] { read_cifar100_data(cifar_records({{20, 1}}), "coarse.bin", false); }, {"coarse.bin", "label 20"});
  const ImageDataset ds = read_cifar100_data(cifar_records({{19, 99}, {0, 0}}), "ok.bin");
  CHECK(ds.size() == 2);
  CHECK(ds.label(0) == 99);
}

// =============================================================================================
// SVHN .mat (fuzz_svhn_mat)
// =============================================================================================
TEST_CASE("read_svhn_mat: dimensions whose product overflows are a size overflow, not undefined behaviour") {
  // fuzz_svhn_mat on the original reader: "signed integer overflow: 17223992320 * 1279342123".
  const Bytes file = mat_file({1 << 20, 1 << 20, 0x7fffffff, 1}, {}, {1, 1}, {1});
  expect_error([&] { read_svhn_mat_data(file, "big.mat"); }, {"big.mat", "size overflow", "exceed 2^40"});
}

TEST_CASE("read_svhn_mat: zero images, zero sizes and label counts that differ are named") {
  TempDir dir("svhn_zero");
  write_file_bytes(dir / "none.mat", mat_file({32, 32, 3, 0}, {}, {0, 1}, {}));
  expect_error([&] { read_svhn_mat(dir / "none.mat"); }, {"none.mat", "no images", "[32, 32, 3, 0]"});
  expect_error(
      [&] {
        read_svhn_mat_data(mat_file({0, 32, 3, 2}, {}, {2, 1}, {1, 2}), "flat.mat");
      },
      {"flat.mat", "zero height, width or channels"});
  expect_error(
      [&] {
        read_svhn_mat_data(mat_file({2, 2, 3, 2}, Bytes(24, 1), {3, 1}, {1, 2, 3}), "y.mat");
      },
      {"y.mat", "y has shape [3, 1]", "2 images"});
  expect_error(
      [&] {
        read_svhn_mat_data(mat_file({2, 2, 3, 1}, Bytes(12, 1), {1, 1}, {11}), "label.mat");
      },
      {"label.mat", "label 11"});
  const ImageDataset ok = read_svhn_mat_data(mat_file({2, 2, 3, 2}, Bytes(24, 1), {2, 1}, {10, 3}), "ok.mat");
  CHECK(ok.images.shape() == Shape{2, 2, 2, 3});
  CHECK(ok.label(0) == 0);
  CHECK(ok.label(1) == 3);
}

// =============================================================================================
// Images through stb_image (fuzz_image)
// =============================================================================================
TEST_CASE("decode_image: PNG, BMP and JPEG decode; the data set reader names a file that does not") {
  for (const char* f : {"png", "bmp", "jpg"}) {
    const DecodedImage im = decode_image(encode_image(f, 5, 4, 3), std::string("a.") + f);
    CHECK(im.height == 4);
    CHECK(im.width == 5);
    CHECK(im.pixels.size() == 60);
    CHECK(decode_image(encode_image(f, 5, 4, 3), "b", 7).pixels.size() == 7 * 7 * 3);
  }
  expect_error([&] { decode_image(Bytes{1, 2, 3}, "junk.png"); }, {"junk.png", "cannot decode"});
}

TEST_CASE("decode_image: a JPEG Huffman table of more than 256 codes is rejected before stb_image reads it") {
  // fuzz_image: "index 257 out of bounds for type 'stbi_uc[257]'" in stbi__build_huffman, a write past
  // the table inside stb_image's decoder state (stb_image 2.27; fixed upstream in 2.28).
  Bytes jpg = encode_image("jpg", 9, 7, 3);
  const size_t dht = find_bytes(jpg, {0xFF, 0xC4});
  jpg[dht + 4 + 1 + 14] = 200;  // the first table's counts of 15- and 16-bit codes
  jpg[dht + 4 + 1 + 15] = 200;
  expect_error([&] { decode_image(jpg, "huff.jpg"); }, {"huff.jpg", "corrupt JPEG", "Huffman table", "at most 256"});
  TempDir dir("huff");
  fs::create_directories(dir.path / "c");
  write_file_bytes(dir / "c/huff.jpg", jpg);
  expect_error([&] { read_image_folder(dir.path.string()); }, {"c/huff.jpg", "Huffman table"});
}

TEST_CASE("decode_image: a scan using a Huffman table that no DHT defined is rejected before stb_image reads it") {
  // fuzz_image: "index 1258226515 out of bounds for type 'stbi_uc[257]'" in stbi__jpeg_huff_decode: a
  // scan decoding with a table never defined reads stb_image's uninitialised table memory (2.27).
  Bytes jpg = encode_image("jpg", 9, 7, 3);  // one DHT segment: DC 0, AC 0, DC 1, AC 1
  const size_t dht = find_bytes(jpg, {0xFF, 0xC4});
  size_t table = dht + 4;
  for (int t = 0; t < 3; ++t) {  // to the fourth table: 1 + 16 + sum(counts) bytes each
    size_t codes = 0;
    for (size_t k = 1; k <= 16; ++k) codes += jpg[table + k];
    table += 17 + codes;
  }
  REQUIRE(jpg[table] == 0x11);
  CHECK_NOTHROW(decode_image(jpg, "ok.jpg"));
  jpg[table] = 0x13;  // AC table 3 instead of 1: the chroma components' AC table is undefined
  expect_error([&] { decode_image(jpg, "undefined.jpg"); },
               {"undefined.jpg", "corrupt JPEG", "uses Huffman table AC 1", "no DHT segment before it defines"});
}

TEST_CASE("decode_image: an undefined or 16-bit quantization table is rejected before stb_image reads it") {
  // fuzz_image: "signed integer overflow: -65534 * 32896" in stbi__jpeg_decode_block: a frame whose
  // components use a quantization table no DQT defined, so stb_image 2.27 dequantized with
  // uninitialised memory. Its int products also overflow with 16-bit table entries.
  Bytes jpg = encode_image("jpg", 9, 7, 3);  // SOF0, components 1, 2, 3 with tables 0, 1, 1
  const size_t sof = find_bytes(jpg, {0xFF, 0xC0});
  REQUIRE(jpg[sof + 15] == 1);  // component 2's table
  Bytes undefined = jpg;
  undefined[sof + 15] = 3;
  expect_error([&] { decode_image(undefined, "dqt.jpg"); },
               {"dqt.jpg", "corrupt JPEG", "uses quantization table 3", "no DQT segment before it defines"});
  Bytes wide = jpg;  // the first table read as 16-bit entries: pairs of 8-bit entries, beyond 255
  const size_t dqt = find_bytes(wide, {0xFF, 0xDB});
  REQUIRE(wide[dqt + 4] == 0x00);
  wide[dqt + 4] = 0x10;
  expect_error([&] { decode_image(wide, "wide.jpg"); },
               {"wide.jpg", "corrupt JPEG", "quantization table 0", "beyond 255"});
  CHECK_NOTHROW(decode_image(jpg, "ok.jpg"));
}

TEST_CASE("decode_image: zero height, truncated files, an empty first IDAT and huge sizes are named") {
  // fuzz_image: stb_image returned a BMP of height 0 as an image ("262149x0"); resizing it then
  // indexed row -1 ("applying non-zero offset ... to null pointer" in resize_bilinear_hwc).
  Bytes bmp = encode_image("bmp", 5, 4, 3);
  std::memset(bmp.data() + 22, 0, 4);  // biHeight = 0
  expect_error([&] { decode_image(bmp, "flat.bmp"); }, {"flat.bmp", "zero height or width"});
  expect_error([&] { decode_image(bmp, "flat.bmp", 8); }, {"flat.bmp", "zero height or width"});

  // fuzz_image: a 432-byte BMP declaring 13696773x4 pixels took 14 s and ~1 GB: stb_image reads
  // zeros past the end of a BMP, so the reader checks that the pixel rows are in the file.
  Bytes wide = encode_image("bmp", 5, 4, 3);
  const uint32_t w = 13696773;
  std::memcpy(wide.data() + 18, &w, 4);
  expect_error([&] { decode_image(wide, "wide.bmp"); }, {"wide.bmp", "truncated BMP", "13696773x4"});
  const Bytes full = encode_image("bmp", 5, 4, 3);
  expect_error([&] { decode_image(Bytes(full.begin(), full.end() - 10), "cut.bmp"); }, {"cut.bmp", "truncated BMP"});
  // fuzz_image: a 30-byte BMP of 0 bits per pixel and height -196860 (top-down) made stb_image
  // allocate 1.2 GB: the size check read the negative height from stbi_info as is.
  Bytes top_down = full;
  const int32_t minus_h = -196860, w2049 = 2049;
  std::memcpy(top_down.data() + 18, &w2049, 4);
  std::memcpy(top_down.data() + 22, &minus_h, 4);
  expect_error([&] { decode_image(top_down, "top_down.bmp", 0, 1 << 20); }, {"top_down.bmp", "truncated BMP"});
  Bytes small_top_down = full;
  const int32_t minus_4 = -4;
  std::memcpy(small_top_down.data() + 22, &minus_4, 4);
  CHECK(decode_image(small_top_down, "top_down.bmp").height == 4);
  expect_error([&] { decode_image(small_top_down, "top_down.bmp", 0, 10); }, {"top_down.bmp", "5x4", "limit of 10"});
  top_down[28] = 0;  // 0 bits per pixel
  expect_error([&] { decode_image(top_down, "bpp0.bmp"); }, {"bpp0.bmp", "corrupt BMP", "0 bits per pixel"});
  Bytes offset = full;
  offset[10] = 20;  // bfOffBits inside the headers
  expect_error([&] { decode_image(offset, "offset.bmp"); }, {"offset.bmp", "corrupt BMP", "offset 20"});

  // A JPEG cut short decodes as grey in stb_image: the reader wants the end-of-image marker.
  const Bytes jpg = encode_image("jpg", 9, 7, 3);
  expect_error([&] { decode_image(Bytes(jpg.begin(), jpg.end() - 30), "cut.jpg"); },
               {"cut.jpg", "truncated JPEG", "end-of-image"});

  // fuzz_image: stb_image copies an empty first IDAT chunk into a null buffer (memcpy(nullptr, p, 0)).
  const Bytes png = encode_image("png", 5, 4, 3);
  const size_t idat = find_bytes(png, {'I', 'D', 'A', 'T'}) - 4;
  Bytes empty_idat(png.begin(), png.begin() + std::ptrdiff_t(idat));
  const Bytes chunk = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xaf, 0x06, 0x1e};  // length 0, CRC of "IDAT"
  empty_idat.insert(empty_idat.end(), chunk.begin(), chunk.end());
  empty_idat.insert(empty_idat.end(), png.begin() + std::ptrdiff_t(idat), png.end());
  expect_error([&] { decode_image(empty_idat, "empty_idat.png"); }, {"empty_idat.png", "empty IDAT"});

  // fuzz_image: an IDAT chunk declaring more bytes than the file holds made stb_image allocate
  // 2 GiB before reading it ("out-of-memory (malloc(2147483648))" from a 101-byte PNG).
  Bytes long_chunk = png;
  const uint8_t length[4] = {0x3f, 0xff, 0xff, 0xff};
  std::memcpy(long_chunk.data() + idat, length, 4);
  expect_error([&] { decode_image(long_chunk, "chunk.png"); },
               {"chunk.png", "truncated PNG", "chunk IDAT", "declares 1073741823 bytes"});
  expect_error([&] { decode_image(Bytes(png.begin(), png.end() - 12), "no_iend.png"); },
               {"no_iend.png", "without an IEND chunk"});

  // A header declaring more pixels than the limit is rejected before anything is allocated.
  Bytes big = encode_image("png", 5, 4, 3);
  const uint8_t side[4] = {0, 0, 0x40, 0};  // 16384 x 16384 (IHDR width and height, big-endian)
  std::memcpy(big.data() + 16, side, 4);
  std::memcpy(big.data() + 20, side, 4);
  expect_error([&] { decode_image(big, "big.png"); }, {"big.png", "16384x16384", "exceeds the reader's limit"});
  expect_error([&] { decode_image(png, "small.png", 0, 10); }, {"small.png", "5x4", "limit of 10 pixels"});
}

// =============================================================================================
// Checkpoints (fuzz_checkpoint)
// =============================================================================================
TEST_CASE("load_checkpoint: tensor sizes whose product overflows are rejected, not undefined behaviour") {
  // fuzz_checkpoint on the original reader: "signed integer overflow: 290735935115493378 * 16777216"
  // in shape_numel, reached from a tensor record with large dimensions.
  Bytes p;
  put_pod(p, uint32_t{0});  // metadata
  put_pod(p, uint32_t{1});  // one tensor
  put_str(p, "t");
  put_pod(p, uint8_t{0});  // f32
  put_pod(p, uint32_t{3});
  for (int64_t d : {int64_t(1) << 31, int64_t(1) << 31, int64_t(1) << 31}) put_pod(p, d);
  put_pod(p, uint64_t{0});
  expect_error([&] { load_checkpoint_data(checkpoint_file(p), "overflow.ckpt"); },
               {"overflow.ckpt", "tensor 't'", "implausible shape", "2^40"});
}

TEST_CASE("load_checkpoint: a tensor larger than the file fails before anything is allocated") {
  // Before: Tensor::empty of the declared shape first (here 4 TiB), the size check after.
  Bytes p;
  put_pod(p, uint32_t{0});
  put_pod(p, uint32_t{1});
  put_str(p, "w");
  put_pod(p, uint8_t{1});  // f64
  put_pod(p, uint32_t{1});
  put_pod(p, int64_t(1) << 39);
  put_pod(p, uint64_t(8) << 39);
  expect_error([&] { load_checkpoint_data(checkpoint_file(p), "big.ckpt"); },
               {"big.ckpt", "truncated record", "tensor data", "4398046511104 bytes needed"});
  // An empty tensor with a large other size is still an empty tensor.
  Bytes e;
  put_pod(e, uint32_t{0});
  put_pod(e, uint32_t{1});
  put_str(e, "e");
  put_pod(e, uint8_t{0});
  put_pod(e, uint32_t{2});
  put_pod(e, int64_t{0});
  put_pod(e, int64_t(1) << 40);
  put_pod(e, uint64_t{0});
  CHECK(load_checkpoint_data(checkpoint_file(e), "empty.ckpt").tensors.at("e").shape() == Shape{0, int64_t(1) << 40});
}

TEST_CASE("load_checkpoint: duplicate tensor names and metadata keys are named, not silently dropped") {
  Bytes p;
  put_pod(p, uint32_t{0});
  put_pod(p, uint32_t{2});
  for (float v : {1.f, 2.f}) {
    put_str(p, "model.w");
    put_pod(p, uint8_t{0});
    put_pod(p, uint32_t{1});
    put_pod(p, int64_t{1});
    put_pod(p, uint64_t{4});
    put_pod(p, v);
  }
  expect_error([&] { load_checkpoint_data(checkpoint_file(p), "dup.ckpt"); },
               {"dup.ckpt", "tensor 'model.w' appears twice"});
  Bytes m;
  put_pod(m, uint32_t{2});
  for (int64_t v : {1, 2}) {
    put_str(m, "epoch");
    put_pod(m, uint8_t{0});
    put_pod(m, v);
  }
  put_pod(m, uint32_t{0});
  expect_error([&] { load_checkpoint_data(checkpoint_file(m), "meta.ckpt"); },
               {"meta.ckpt", "metadata 'epoch' appears twice"});
}

// =============================================================================================
// Integer model files and the integer engine (fuzz_model)
// =============================================================================================
namespace {
// input 3x3x2 -> conv 'a' (1x1, codes 0..1) -> conv 'b' (3x3, padding 1, padding code in_zero_point
// or pad_values, weights at `bits`, requantized) -> flatten -> linear (accumulators) -> dequantize.
deploy::Model padded_model(int32_t in_zero_point, std::vector<double> pad_values, int32_t bits) {
  using namespace deploy;
  Model m;
  Op in;
  in.kind = OpKind::input;
  in.input.C = 2, in.input.H = 3, in.input.W = 3;
  m.ops.push_back(in);
  Op a;
  a.kind = OpKind::conv;
  a.layer.name = "a", a.layer.K = 2, a.layer.C = 2, a.layer.bits = 2, a.layer.out_qmax = 1;
  a.layer.weights = {1, -1, -2, 1}, a.layer.scale = {0.003, 0.002}, a.layer.offset = {0.25, 0.5};
  m.ops.push_back(a);
  Op b;
  b.kind = OpKind::conv;
  WeightOp& l = b.layer;
  l.name = "b", l.K = 2, l.C = 2, l.R = l.S = 3, l.pad_h = l.pad_w = 1, l.bits = bits, l.out_qmax = 255;
  l.in_zero_point = in_zero_point, l.pad_values = std::move(pad_values);
  for (int64_t i = 0; i < l.numel(); ++i) l.weights.push_back(int16_t(bits > 8 ? 301 - 97 * (i % 3) : 7 - 3 * (i % 4)));
  l.scale = {2e-5, -3e-5}, l.offset = {0.4, 0.7};
  m.ops.push_back(b);
  Op f;
  f.kind = OpKind::flatten;
  m.ops.push_back(f);
  Op fc;
  fc.kind = OpKind::linear;
  fc.layer.name = "fc", fc.layer.K = 2, fc.layer.C = 18, fc.layer.bits = 3, fc.layer.out_qmax = 0;
  for (int64_t i = 0; i < 36; ++i) fc.layer.weights.push_back(int16_t(i % 7 - 3));
  fc.layer.scale = {1, 1}, fc.layer.offset = {0, 0};
  m.ops.push_back(fc);
  Op d;
  d.kind = OpKind::dequantize;
  d.dequant.scale = {0.5, 0.25}, d.dequant.offset = {0, 1};
  m.ops.push_back(d);
  return m;
}

deploy::Op input_op(int64_t C, int64_t H, int64_t W) {
  deploy::Op in;
  in.kind = deploy::OpKind::input;
  in.input.C = C, in.input.H = H, in.input.W = W;
  return in;
}

// A 1x1 conv of all-one 2-bit weights.
deploy::Op conv_op(int64_t K, int64_t C, int64_t pad_h, int64_t pad_w, int64_t stride) {
  deploy::Op o;
  o.kind = deploy::OpKind::conv;
  deploy::WeightOp& l = o.layer;
  l.name = "c", l.K = K, l.C = C, l.pad_h = pad_h, l.pad_w = pad_w, l.stride_h = l.stride_w = stride;
  l.bits = 2, l.out_qmax = 255;
  l.weights.assign(size_t(K * C), 1);
  l.scale.assign(size_t(K), 0.01), l.offset.assign(size_t(K), 0.0);
  return o;
}

// flatten -> linear of `features` inputs (accumulators) -> dequantize.
void add_head(deploy::Model& m, int64_t features) {
  deploy::Op f;
  f.kind = deploy::OpKind::flatten;
  m.ops.push_back(f);
  deploy::Op l;
  l.kind = deploy::OpKind::linear;
  l.layer.name = "fc", l.layer.K = 1, l.layer.C = features, l.layer.bits = 2, l.layer.out_qmax = 0;
  l.layer.weights.assign(size_t(features), 1), l.layer.scale = {1}, l.layer.offset = {0};
  m.ops.push_back(l);
  deploy::Op d;
  d.kind = deploy::OpKind::dequantize;
  d.dequant.scale = {1}, d.dequant.offset = {0};
  m.ops.push_back(d);
}
}  // namespace

TEST_CASE("validate (.lbq): a padded input beyond 2^31 elements is rejected before the engine allocates it") {
  // fuzz_model's activation limit (found by reading the limits it checks, confirmed with this
  // model): a 331-byte file, a 1x1x4 image padded by 2^20 with stride 2^20 (a 3x3 output), passed
  // validate; the engine's fast conv then padded a copy of (2^21 + 1)^2 x 4 bytes (16 TiB:
  // "requested allocation size 0x100001000004" under ASan, std::bad_alloc without).
  deploy::Model m;
  m.ops.push_back(input_op(4, 1, 1));
  m.ops.push_back(conv_op(1, 4, 1 << 20, 1 << 20, 1 << 20));
  add_head(m, 9);
  expect_error([&] { deploy::validate(m, "pad.lbq"); },
               {"pad.lbq", "op 1 (conv 'c')", "padded input 2097153x2097153x4", "exceeds 2147483648"});
  expect_error([&] { deploy::Engine e(m, "pad.lbq"); }, {"pad.lbq", "padded input"});
  // The same check keeps out.H * out.W * out.C from overflowing int64 ("signed integer overflow:
  // 4505800799158272 * 4096" under UBSan): 1023 convs grow a 2^20 x 1 image by 2^21 rows each, then a
  // conv of 4096 channels pads both sides by 2^20.
  deploy::Model chain;
  chain.ops.push_back(input_op(1, 1 << 20, 1));
  for (int i = 0; i < 1023; ++i) chain.ops.push_back(conv_op(1, 1, 1 << 20, 0, 1));
  chain.ops.push_back(conv_op(4096, 1, 1 << 20, 1 << 20, 1));
  add_head(chain, 1);
  expect_error([&] { deploy::validate(chain, "chain.lbq"); }, {"chain.lbq", "padded input"});
  // max_pool's output is held to the limit too (a 2x2 window, padding 1, stride 1 adds a row and a column).
  deploy::Model pool;
  pool.ops.push_back(input_op(1, 1 << 20, 1 << 11));
  deploy::Op p;
  p.kind = deploy::OpKind::max_pool;
  p.pool.R = p.pool.S = 2, p.pool.stride_h = p.pool.stride_w = 1, p.pool.pad_h = p.pool.pad_w = 1;
  pool.ops.push_back(p);
  add_head(pool, 1);  // not reached
  expect_error([&] { deploy::validate(pool, "pool.lbq"); }, {"pool.lbq", "op 1 (max_pool)", "output too large"});
}

TEST_CASE("Engine: padding codes above the input's codes count in the accumulator bounds (fast == _ref)") {
  // fuzz_model on the engine's exact double-precision requantization: the bound it declared
  // (kernels::bound_accumulators: sum |w| times the largest code of the input) left out the padding
  // code. A layer reading codes 0..1 but padding with in_zero_point 114 made requantize_u8_ref throw
  // "accumulator -6437 beyond the declared bound 1708" while the fast path ran on, and the fast
  // path's double arithmetic was no longer guaranteed exact. Here: codes 0..1 padded with 255 or
  // with per-channel codes {0, 250}, int8 and wide (9-bit) weights.
  struct Case {
    int32_t zero_point;
    std::vector<double> pad_values;
    int32_t bits;
  };
  for (const Case& c : {Case{255, {}, 4}, Case{0, {0, 250}, 4}, Case{255, {}, 10}, Case{0, {0, 250}, 10}}) {
    CAPTURE(c.zero_point);
    CAPTURE(c.bits);
    const deploy::Model m =
        deploy::parse_model(deploy::serialize_model(padded_model(c.zero_point, c.pad_values, c.bits)), "padded.lbq");
    deploy::Engine e(m, "padded.lbq");
    std::vector<uint8_t> images(2 * 18);
    for (size_t j = 0; j < images.size(); ++j) images[j] = uint8_t(j * 37 % 256);
    std::vector<float> fast(4), ref(4);
    e.run(images.data(), 2, fast.data(), deploy::Engine::Path::fast);
    REQUIRE(error_of([&] { e.run(images.data(), 2, ref.data(), deploy::Engine::Path::reference); }).empty());
    CHECK(std::memcmp(fast.data(), ref.data(), sizeof(float) * fast.size()) == 0);
  }
}

// =============================================================================================
// Config files (fuzz_config)
// =============================================================================================
namespace {
std::vector<cli::OptionSpec> specs() {
  return {{"model", "lenet5", "model"},
          {"augment", "auto", "augmentation"},
          {"out", "runs/last", "run folder"},
          {"nesterov", "", "switch", true},
          {"lr", "0.05", "learning rate"}};
}
}  // namespace

TEST_CASE("Options: to_config() loads back to the same values, also for options emptied over a default") {
  // fuzz_config: "to_config() changes lambda-beta from '' to '0.03'": an option set to "" was left
  // out of config.txt, so a --resume'd run got the default back (e.g. --augment "" = no
  // augmentation resumed as augment = auto).
  cli::Options o("train", specs());
  o.load_config_text("augment =\nlr = 0.1\nnesterov =\n", "a.cfg");
  CHECK(o.str("augment").empty());
  const std::string saved = o.to_config();
  CHECK(saved.find("augment =\n") != std::string::npos);
  cli::Options again("train", specs());
  again.load_config_text(saved, "config.txt");
  for (const auto& s : specs()) CHECK_MESSAGE(again.str(s.key) == o.str(s.key), s.key);
}

TEST_CASE("Options: a flag value that config.txt could not store is an error naming the option") {
  // fuzz_config: "to_config() changes model from 'resnet1refa#--wbits=quiet4' to 'resnet1refa'":
  // '#' starts a comment in a config file, so the stored config lost the rest of the value.
  std::string a0 = "--out", a1 = "runs/#3";
  char* argv[] = {a0.data(), a1.data()};
  cli::Options o("train", specs());
  expect_error([&] { o.parse(2, argv); }, {"out", "runs/#3", "cannot contain '#'"});
  std::string b0 = "--model= resnet20";
  char* argv2[] = {b0.data()};
  expect_error([&] { o.parse(1, argv2); }, {"model", "white space"});
  std::string c0 = "--model=res\nnet";
  char* argv3[] = {c0.data()};
  expect_error([&] { o.parse(1, argv3); }, {"model", "line break"});
}
