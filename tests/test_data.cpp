// Tests of data/: readers on files written here (raw, gzip, MAT v5 with and without compression,
// PNG/BMP folders), their error messages, transforms on hand-picked values, and the DataLoader's
// determinism (order, augmentation, threads, prefetch, resume).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "data/dataset.h"
#include "data/io.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "data_fixtures.h"
#include "test_util.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

using namespace lowbit;
using namespace lowbit::data;
using namespace lowbit::fixtures;
using namespace lowbit::testing;
namespace fs = std::filesystem;

namespace {

void check_pixels(const ImageDataset& ds, int64_t first = 0) {
  int64_t bad = 0;
  for (int64_t n = 0; n < ds.size(); ++n)
    for (int64_t y = 0; y < ds.height(); ++y)
      for (int64_t x = 0; x < ds.width(); ++x)
        for (int64_t c = 0; c < ds.channels(); ++c)
          bad += ds.pixels(n)[(y * ds.width() + x) * ds.channels() + c] != pixel_formula(first + n, y, x, c);
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("read_file_bytes: raw and gzip, including highly compressible data past the size guess") {
  TempDir dir("io");
  Bytes data(3 << 20, 0);
  for (size_t i = 0; i < data.size(); i += 4099) data[i] = uint8_t(i / 4099);
  for (bool gz : {false, true}) {
    const std::string path = dir / (gz ? "d.gz" : "d");
    write_file_bytes(path, data, gz);
    CHECK(read_file_bytes(path, "test") == data);
  }
  write_file_bytes(dir / "empty", {});
  CHECK(read_file_bytes(dir / "empty", "test").empty());
  const Bytes z = zlib_compress(data.data(), data.size());
  CHECK(zlib_decompress(z.data(), z.size(), "test") == data);
  expect_error([&] { zlib_decompress(z.data(), z.size() / 2, "half"); }, {"half", "truncated zlib stream"});
}

// =============================================================================================
// IDX
// =============================================================================================
TEST_CASE("read_idx: raw and gzip files round-trip pixels and labels") {
  TempDir dir("idx");
  const std::vector<uint8_t> labels = {3, 0, 9, 1, 7};
  for (bool gz : {false, true}) {
    const std::string im = dir / (gz ? "im.gz" : "im"), lb = dir / (gz ? "lb.gz" : "lb");
    write_file_bytes(im, idx_images(5, 4, 3), gz);
    write_file_bytes(lb, idx_labels(labels), gz);
    const ImageDataset ds = read_idx(im, lb);
    REQUIRE(ds.images.shape() == Shape{5, 4, 3, 1});
    CHECK(ds.num_classes == 10);
    check_pixels(ds);
    for (int64_t i = 0; i < 5; ++i) CHECK(ds.label(i) == labels[size_t(i)]);
  }
}

TEST_CASE("read_idx: corrupt and truncated files name the file and the problem") {
  TempDir dir("idx_bad");
  const std::string good_im = dir / "good_im", good_lb = dir / "good_lb";
  write_file_bytes(good_im, idx_images(5, 4, 3));
  write_file_bytes(good_lb, idx_labels({1, 2, 3, 4, 5}));

  Bytes bad_magic = idx_images(5, 4, 3);
  bad_magic[3] = 0x01;
  write_file_bytes(dir / "bad_magic", bad_magic);
  expect_error([&] { read_idx(dir / "bad_magic", good_lb); }, {"bad_magic", "bad magic 0x00000801", "0x00000803"});

  const Bytes full = idx_images(5, 4, 3);
  write_file_bytes(dir / "short_im", truncated(full, full.size() - 7));
  expect_error([&] { read_idx(dir / "short_im", good_lb); }, {"short_im", "truncated", "expected 76 bytes", "got 69"});
  write_file_bytes(dir / "short_header", truncated(full, 10));
  expect_error([&] { read_idx(dir / "short_header", good_lb); }, {"short_header", "truncated", "header"});
  Bytes long_im = full;
  long_im.push_back(0);
  write_file_bytes(dir / "long_im", long_im);
  expect_error([&] { read_idx(dir / "long_im", good_lb); }, {"long_im", "trailing"});

  write_file_bytes(dir / "four_labels", idx_labels({1, 2, 3, 4}));
  expect_error([&] { read_idx(good_im, dir / "four_labels"); }, {"four_labels", "5 images", "4 labels"});
  write_file_bytes(dir / "label_12", idx_labels({1, 2, 12, 4, 5}));
  expect_error([&] { read_idx(good_im, dir / "label_12"); }, {"label_12", "label 12", "record 2"});
  expect_error([&] { read_idx(dir / "nonexistent", good_lb); }, {"nonexistent", "not found"});

  // A gzip stream cut short must not read short silently.
  Bytes gz_bytes;
  write_file_bytes(dir / "im.gz", full, true);
  gz_bytes = read_file_bytes(dir / "im.gz", "raw");  // decompressed; re-read the compressed bytes below
  std::FILE* f = std::fopen((dir / "im.gz").c_str(), "rb");
  Bytes compressed(4096);
  compressed.resize(std::fread(compressed.data(), 1, compressed.size(), f));
  std::fclose(f);
  write_file_bytes(dir / "cut.gz", truncated(compressed, compressed.size() - 12));
  expect_error([&] { read_idx(dir / "cut.gz", good_lb); }, {"cut.gz", "gzip"});
}

// =============================================================================================
// CIFAR
// =============================================================================================
TEST_CASE("read_cifar10: planar records become HWC, files concatenate, gzip accepted") {
  TempDir dir("cifar10");
  write_file_bytes(dir / "a.bin", cifar_records({{4}, {9}}, 0));
  write_file_bytes(dir / "b.bin.gz", cifar_records({{0}}, 2), true);
  const ImageDataset ds = read_cifar10({dir / "a.bin", dir / "b.bin.gz"});
  REQUIRE(ds.images.shape() == Shape{3, 32, 32, 3});
  check_pixels(ds);
  CHECK(ds.label(0) == 4);
  CHECK(ds.label(1) == 9);
  CHECK(ds.label(2) == 0);
  CHECK(ds.class_names.size() == 10);
  CHECK(ds.class_names[9] == "truck");

  const Bytes two = cifar_records({{1}, {2}});
  write_file_bytes(dir / "short.bin", truncated(two, two.size() - 100));
  expect_error([&] { read_cifar10({dir / "short.bin"}); }, {"short.bin", "truncated", "3073-byte records"});
  write_file_bytes(dir / "label.bin", cifar_records({{1}, {10}}));
  expect_error([&] { read_cifar10({dir / "label.bin"}); }, {"label.bin", "label 10", "record 1"});
  write_file_bytes(dir / "empty.bin", {});
  expect_error([&] { read_cifar10({dir / "empty.bin"}); }, {"empty.bin", "empty"});
}

TEST_CASE("read_cifar100: coarse and fine labels") {
  TempDir dir("cifar100");
  write_file_bytes(dir / "train.bin", cifar_records({{19, 99}, {0, 42}, {7, 3}}));
  const ImageDataset fine = read_cifar100(dir / "train.bin", true);
  const ImageDataset coarse = read_cifar100(dir / "train.bin", false);
  check_pixels(fine);
  CHECK(fine.num_classes == 100);
  CHECK(coarse.num_classes == 20);
  CHECK(fine.label(0) == 99);
  CHECK(fine.label(1) == 42);
  CHECK(fine.label(2) == 3);
  CHECK(coarse.label(0) == 19);
  CHECK(coarse.label(2) == 7);
  write_file_bytes(dir / "bad.bin", cifar_records({{20, 5}}));
  expect_error([&] { read_cifar100(dir / "bad.bin", false); }, {"bad.bin", "label 20"});
  // A CIFAR-10 file (3073-byte records) is not a CIFAR-100 file.
  write_file_bytes(dir / "c10.bin", cifar_records({{1}, {2}}));
  expect_error([&] { read_cifar100(dir / "c10.bin"); }, {"c10.bin", "3074-byte records"});
}

// =============================================================================================
// SVHN .mat
// =============================================================================================
TEST_CASE("read_svhn_mat: uncompressed and miCOMPRESSED, column-major X, label 10 -> 0") {
  TempDir dir("svhn");
  const std::vector<int> labels = {10, 1, 5, 9};
  for (bool compressed : {false, true})
    for (bool y_double : {true, false}) {
      const std::string path = dir / ("svhn_" + std::to_string(compressed) + std::to_string(y_double) + ".mat");
      write_file_bytes(path, svhn_mat(labels, compressed, y_double));
      const ImageDataset ds = read_svhn_mat(path);
      REQUIRE(ds.images.shape() == Shape{4, 32, 32, 3});
      check_pixels(ds);
      CHECK(ds.label(0) == 0);
      CHECK(ds.label(1) == 1);
      CHECK(ds.label(2) == 5);
      CHECK(ds.label(3) == 9);
      CHECK(ds.num_classes == 10);
    }
}

TEST_CASE("read_svhn_mat: truncated and corrupt files") {
  TempDir dir("svhn_bad");
  const Bytes plain = svhn_mat({1, 2}, false, true), packed = svhn_mat({1, 2}, true, true);
  write_file_bytes(dir / "cut.mat", truncated(plain, plain.size() - 40));
  expect_error([&] { read_svhn_mat(dir / "cut.mat"); }, {"cut.mat", "truncated"});
  write_file_bytes(dir / "cut_z.mat", truncated(packed, packed.size() - 5));
  expect_error([&] { read_svhn_mat(dir / "cut_z.mat"); }, {"cut_z.mat", "truncated"});
  Bytes garbled = packed;
  for (size_t i = 140; i < 150; ++i) garbled[i] ^= 0x5a;  // inside the first zlib stream
  write_file_bytes(dir / "garbled.mat", garbled);
  expect_error([&] { read_svhn_mat(dir / "garbled.mat"); }, {"garbled.mat"});
  write_file_bytes(dir / "header.mat", truncated(plain, 60));
  expect_error([&] { read_svhn_mat(dir / "header.mat"); }, {"header.mat", "128-byte"});
  Bytes not_mat = plain;
  std::memcpy(not_mat.data(), "HELLO", 5);
  write_file_bytes(dir / "notmat.mat", not_mat);
  expect_error([&] { read_svhn_mat(dir / "notmat.mat"); }, {"notmat.mat", "MATLAB 5.0"});
  write_file_bytes(dir / "noy.mat", svhn_mat({1, 2}, true, true, false));
  expect_error([&] { read_svhn_mat(dir / "noy.mat"); }, {"noy.mat", "no variable 'y'"});
  write_file_bytes(dir / "label.mat", svhn_mat({1, 11}, false, false));
  expect_error([&] { read_svhn_mat(dir / "label.mat"); }, {"label.mat", "label 11"});
}

TEST_CASE("readers: randomly corrupted and truncated files either read or throw lowbit::Error") {
  TempDir dir("fuzz");
  Generator gen(42);
  struct Case {
    std::string name;
    Bytes bytes;
    std::function<void(const std::string&)> read;
  };
  const std::string labels_path = dir / "labels";
  write_file_bytes(labels_path, idx_labels({1, 2, 3}));
  const std::vector<Case> cases = {
      {"idx", idx_images(3, 4, 3), [&](const std::string& p) { read_idx(p, labels_path); }},
      {"cifar", cifar_records({{1}, {2}}), [](const std::string& p) { read_cifar10({p}); }},
      {"mat", svhn_mat({1, 10}, false, true), [](const std::string& p) { read_svhn_mat(p); }},
      {"matz", svhn_mat({1, 10}, true, false), [](const std::string& p) { read_svhn_mat(p); }},
  };
  for (const Case& c : cases) {
    int64_t errors = 0;
    for (int trial = 0; trial < 150; ++trial) {
      Bytes b = c.bytes;
      if (trial % 3 == 0) {
        b.resize(size_t(gen.uniform() * double(b.size())));
      } else {
        // Corrupt a few bytes, biased towards headers and tags at the front.
        for (int k = 0; k < 1 + trial % 4; ++k) {
          const double u = gen.uniform();
          const size_t at = size_t((trial % 2 ? u * u * u : u) * double(b.size()));
          b[std::min(at, b.size() - 1)] = uint8_t(gen.uniform() * 256);
        }
      }
      const std::string path = dir / (c.name + std::to_string(trial));
      write_file_bytes(path, b, trial % 5 == 0);
      try {
        c.read(path);
      } catch (const Error& e) {
        ++errors;
        CHECK_MESSAGE(std::string(e.what()).find(path) != std::string::npos, e.what());
      } catch (const std::exception& e) {
        FAIL("not a lowbit::Error: ", e.what(), " for ", path);
      }
    }
    CHECK(errors >= 50);  // at least every truncation fails
  }
}

// =============================================================================================
// Image folders
// =============================================================================================
namespace {
// 5x4 RGB image from pixel_formula(n, ...).
std::vector<uint8_t> tiny_image(int64_t n, int64_t h = 4, int64_t w = 5) {
  std::vector<uint8_t> px;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c) px.push_back(pixel_formula(n, y, x, c));
  return px;
}
}  // namespace

TEST_CASE("read_image_folder: PNG and BMP classes, sorted, lossless pixels") {
  TempDir dir("folder");
  fs::create_directories(dir.path / "cat");
  fs::create_directories(dir.path / "ant");
  // Sample order: classes sorted (ant, cat), files sorted within a class.
  REQUIRE(stbi_write_png((dir / "ant/a.png").c_str(), 5, 4, 3, tiny_image(0).data(), 15));
  REQUIRE(stbi_write_bmp((dir / "ant/b.bmp").c_str(), 5, 4, 3, tiny_image(1).data()));
  REQUIRE(stbi_write_png((dir / "cat/z.png").c_str(), 5, 4, 3, tiny_image(2).data(), 15));
  write_file_bytes(dir / "cat/readme.txt", {'h', 'i'});  // ignored
  const ImageDataset ds = read_image_folder(dir.path.string());
  REQUIRE(ds.images.shape() == Shape{3, 4, 5, 3});
  check_pixels(ds);
  CHECK(ds.class_names == std::vector<std::string>{"ant", "cat"});
  CHECK(ds.label(0) == 0);
  CHECK(ds.label(1) == 0);
  CHECK(ds.label(2) == 1);

  const ImageDataset resized = read_image_folder(dir.path.string(), 8);
  CHECK(resized.images.shape() == Shape{3, 8, 8, 3});

  REQUIRE(stbi_write_png((dir / "cat/big.png").c_str(), 6, 4, 3, tiny_image(0, 4, 6).data(), 18));
  expect_error([&] { read_image_folder(dir.path.string()); }, {"big.png", "4x6", "differs"});
  fs::remove(dir.path / "cat/big.png");
  write_file_bytes(dir / "cat/broken.png", {0x89, 'P', 'N', 'G', 1, 2, 3});
  expect_error([&] { read_image_folder(dir.path.string()); }, {"broken.png", "cannot decode"});
}

TEST_CASE("load_dataset: folder with train and Tiny-ImageNet style val") {
  TempDir dir("tiny");
  for (const char* wnid : {"n01", "n02"}) fs::create_directories(dir.path / "train" / wnid / "images");
  fs::create_directories(dir.path / "val" / "images");
  REQUIRE(stbi_write_png((dir / "train/n01/images/x.JPEG.png").c_str(), 5, 4, 3, tiny_image(0).data(), 15));
  REQUIRE(stbi_write_png((dir / "train/n02/images/y.png").c_str(), 5, 4, 3, tiny_image(1).data(), 15));
  REQUIRE(stbi_write_png((dir / "val/images/val_0.png").c_str(), 5, 4, 3, tiny_image(0).data(), 15));
  REQUIRE(stbi_write_png((dir / "val/images/val_1.png").c_str(), 5, 4, 3, tiny_image(1).data(), 15));
  const std::string ann = "val_0.png\tn02\t0\t0\t4\t4\nval_1.png\tn01\t0\t0\t4\t4\n";
  write_file_bytes(dir / "val/val_annotations.txt", Bytes(ann.begin(), ann.end()));
  const DataSplits s = load_dataset("folder:" + dir.path.string());
  CHECK(s.train.size() == 2);
  CHECK(s.test.size() == 2);
  CHECK(s.test.class_names == s.train.class_names);
  CHECK(s.test.label(0) == 1);
  CHECK(s.test.label(1) == 0);
  check_pixels(s.test);
  const DataSplits r = load_dataset("folder:" + dir.path.string() + "@6");
  CHECK(r.train.images.shape() == Shape{2, 6, 6, 3});

  const std::string bad = "val_0.png\tn99\n";
  write_file_bytes(dir / "val/val_annotations.txt", Bytes(bad.begin(), bad.end()));
  expect_error([&] { load_dataset("folder:" + dir.path.string()); }, {"val_annotations.txt", "n99"});
}

TEST_CASE("load_dataset: cifar10 directory, test-set fallbacks and helpful errors") {
  TempDir dir("named");
  for (int i = 1; i <= 5; ++i)
    write_file_bytes(dir / ("data_batch_" + std::to_string(i) + ".bin.gz"), cifar_records({{uint8_t(i)}}), true);
  expect_error([&] { load_dataset("cifar10:" + dir.path.string()); }, {"test_batch", "cifar-10-binary"});
  write_file_bytes(dir / "test_batch.lossy.bin.gz", cifar_records({{7}, {8}}), true);
  DataSplits s = load_dataset("cifar10:" + dir.path.string());
  CHECK(s.train.size() == 5);
  CHECK(s.train.label(4) == 5);
  CHECK(s.test.size() == 2);
  CHECK(s.test.note.find("lossy") != std::string::npos);
  write_file_bytes(dir / "test_batch.bin", cifar_records({{3}}));
  s = load_dataset("cifar10:" + dir.path.string());
  CHECK(s.test.size() == 1);
  CHECK(s.test.note.empty());

  expect_error([&] { load_dataset("fashion-mnist:" + (dir / "nowhere")); },
               {"nowhere", "train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist"});
  expect_error([&] { load_dataset("svhn:" + dir.path.string()); }, {"train_32x32.mat"});
  expect_error([&] { load_dataset("imagenet:/x"); }, {"unknown data set", "imagenet"});

  const ImageDataset joined = concat_datasets({s.train, s.test});
  CHECK(joined.size() == 6);
  CHECK(joined.label(5) == 3);
  CHECK(joined.pixels(5)[7] == s.test.pixels(0)[7]);
  CHECK(joined.pixels(2)[7] == s.train.pixels(2)[7]);

  const ImageDataset val = s.train.subset(3, 5);
  CHECK(val.size() == 2);
  CHECK(val.label(0) == 4);
  CHECK(val.pixels(0)[0] == s.train.pixels(3)[0]);
  expect_error([&] { s.train.subset(4, 6); }, {"subset", "[4, 6)"});
}

// =============================================================================================
// Transforms
// =============================================================================================
namespace {
ImageBuffer make_buffer(int64_t h, int64_t w, int64_t c) {
  ImageBuffer b{h, w, c, {}};
  for (int64_t i = 0; i < h * w * c; ++i) b.pixels.push_back(float(i + 1));
  return b;
}
}  // namespace

TEST_CASE("transforms: flip, padded crop, center crop, normalize, tofloat on hand-picked values") {
  Generator rng(1);
  // 2x3 single-channel image: rows [1 2 3], [4 5 6].
  ImageBuffer img = make_buffer(2, 3, 1);
  RandomHorizontalFlip::flip(img);
  CHECK(img.pixels == std::vector<float>{3, 2, 1, 6, 5, 4});
  ImageBuffer never = make_buffer(2, 3, 1), always = make_buffer(2, 3, 1);
  RandomHorizontalFlip(0.0).apply(never, rng);
  RandomHorizontalFlip(1.0).apply(always, rng);
  CHECK(never.pixels == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(always.pixels == std::vector<float>{3, 2, 1, 6, 5, 4});

  // 2-channel pixels flip as units.
  ImageBuffer two = make_buffer(1, 2, 2);  // (1,2) (3,4)
  RandomHorizontalFlip::flip(two);
  CHECK(two.pixels == std::vector<float>{3, 4, 1, 2});

  // Padding 1 around [[1 2 3],[4 5 6]] gives a 4x5 canvas; a 2x2 window at (0, 0) sees
  // [[0 0],[0 1]]; at (1, 3): [[3 0],[6 0]]; at (2, 2): [[5 6],[0 0]].
  ImageBuffer a = make_buffer(2, 3, 1), b = make_buffer(2, 3, 1), c = make_buffer(2, 3, 1);
  RandomCrop::crop_padded(a, 2, 2, 1, 0, 0);
  RandomCrop::crop_padded(b, 2, 2, 1, 1, 3);
  RandomCrop::crop_padded(c, 2, 2, 1, 2, 2);
  CHECK(a.pixels == std::vector<float>{0, 0, 0, 1});
  CHECK(b.pixels == std::vector<float>{3, 0, 6, 0});
  CHECK(c.pixels == std::vector<float>{5, 6, 0, 0});
  CHECK((a.height == 2 && a.width == 2));
  ImageBuffer out_of_range = make_buffer(2, 3, 1);
  CHECK_THROWS_AS(RandomCrop::crop_padded(out_of_range, 2, 2, 1, 3, 0), Error);

  ImageBuffer center = make_buffer(4, 4, 1);
  CenterCrop(2, 2).apply(center, rng);
  CHECK(center.pixels == std::vector<float>{6, 7, 10, 11});

  ImageBuffer rgb{1, 1, 3, {51, 102, 255}};
  ToFloat().apply(rgb, rng);
  CHECK(rgb.pixels[0] == doctest::Approx(0.2));
  CHECK(rgb.pixels[2] == doctest::Approx(1.0));
  Normalize({0.5f, 0.0f, 1.0f}, {0.5f, 2.0f, 0.25f}).apply(rgb, rng);
  CHECK(rgb.pixels[0] == doctest::Approx((0.2 - 0.5) / 0.5));
  CHECK(rgb.pixels[1] == doctest::Approx(0.4 / 2.0));
  CHECK(rgb.pixels[2] == doctest::Approx(0.0));
  CHECK_THROWS_AS(Normalize({0.5f, 0.5f}, {1.0f}), Error);
  CHECK_THROWS_AS(Normalize({0.5f}, {0.0f}), Error);
  ImageBuffer grey{1, 1, 1, {1.0f}};
  CHECK_THROWS_AS(Normalize::named("cifar10").apply(grey, rng), Error);  // 3 stats for 1 channel
}

TEST_CASE("transforms: RandomCrop draws every offset, only valid ones, deterministically") {
  // 3x3 image with padding 2, window 3: offsets in [0, 4]^2 = 25 possibilities.
  std::set<std::pair<int64_t, int64_t>> seen;
  for (int64_t s = 0; s < 400; ++s) {
    ImageBuffer img = make_buffer(3, 3, 1);
    Generator rng = sample_generator(7, 0, s);
    RandomCrop(3, 2).apply(img, rng);
    int matches = 0;
    for (int64_t top = 0; top <= 4; ++top)
      for (int64_t left = 0; left <= 4; ++left) {
        ImageBuffer ref = make_buffer(3, 3, 1);
        RandomCrop::crop_padded(ref, 3, 3, 2, top, left);
        if (ref.pixels == img.pixels) {
          ++matches;
          seen.insert({top, left});
        }
      }
    REQUIRE(matches == 1);
    ImageBuffer again = make_buffer(3, 3, 1);
    Generator rng2 = sample_generator(7, 0, s);
    RandomCrop(3, 2).apply(again, rng2);
    CHECK(again.pixels == img.pixels);
  }
  CHECK(seen.size() == 25);
}

TEST_CASE("transforms: bilinear resize matches half-pixel-centre values") {
  // [[0 1],[2 3]] -> 4x4 with align_corners=False: source coords -0.25(->0), 0.25, 0.75, 1.25(->1 clamp).
  ImageBuffer img{2, 2, 1, {0, 1, 2, 3}};
  Generator rng(0);
  Resize(4, 4).apply(img, rng);
  const std::vector<float> expected = {0.0f, 0.25f, 0.75f, 1.0f, 0.5f, 0.75f, 1.25f, 1.5f,
                                       1.5f, 1.75f, 2.25f, 2.5f, 2.0f, 2.25f, 2.75f, 3.0f};
  REQUIRE(img.pixels.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) CHECK(img.pixels[i] == doctest::Approx(expected[i]));
  // Downscaling by 2 averages 2x2 blocks.
  ImageBuffer big = make_buffer(4, 4, 1);
  Resize(2, 2).apply(big, rng);
  CHECK(big.pixels == std::vector<float>{(1 + 2 + 5 + 6) / 4.0f, (3 + 4 + 7 + 8) / 4.0f, (9 + 10 + 13 + 14) / 4.0f,
                                         (11 + 12 + 15 + 16) / 4.0f});
}

TEST_CASE("transforms: brightness and contrast on 0..255 values") {
  // Contrast r = 1.5 around the mean 100 of [0, 100, 200]: 100 + 1.5 * (x - 100) = -50 -> 0, 100, 250.
  ImageBuffer img{1, 3, 1, {0, 100, 200}};
  Generator rng(3);
  RandomContrast(1.5, 1.5).apply(img, rng);
  CHECK(img.pixels == std::vector<float>{0, 100, 250});
  // Per-channel means: channel 0 [10, 30] (mean 20), channel 1 [50, 50]; r = 0.5 halves deviations.
  ImageBuffer two{1, 2, 2, {10, 50, 30, 50}};
  RandomContrast(0.5, 0.5).apply(two, rng);
  CHECK(two.pixels == std::vector<float>{15, 50, 25, 50});
  // Random factors stay in range: symmetric around the mean, |deviation| / 100 in [0.5, 1.5].
  for (int64_t s = 0; s < 50; ++s) {
    ImageBuffer x{1, 3, 1, {50, 100, 150}};
    Generator g = sample_generator(1, 0, s);
    RandomContrast(0.5, 1.5).apply(x, g);
    CHECK(x.pixels[1] == doctest::Approx(100));
    CHECK(x.pixels[0] + x.pixels[2] == doctest::Approx(200));
    CHECK(((x.pixels[2] - 100) / 50 >= 0.5 - 1e-6 && (x.pixels[2] - 100) / 50 <= 1.5 + 1e-6));
  }
  // Brightness: one shift for all pixels, within [-30, 30], both signs occur; clipping at 0 / 255.
  bool up = false, down = false;
  for (int64_t s = 0; s < 50; ++s) {
    ImageBuffer x{1, 3, 1, {0, 128, 255}};
    Generator g = sample_generator(2, 1, s);
    RandomBrightness(30).apply(x, g);
    const float shift = x.pixels[1] - 128;
    CHECK(std::abs(shift) <= 30.0f);
    CHECK(x.pixels[0] == doctest::Approx(std::max(0.0f, shift)).epsilon(1e-4));
    CHECK(x.pixels[2] == doctest::Approx(std::min(255.0f, 255 + shift)).epsilon(1e-6));
    up |= shift > 0, down |= shift < 0;
  }
  CHECK((up && down));
}

TEST_CASE("transforms: pipeline parser") {
  const Compose p = parse_transforms("crop:32:4,flip,normalize:cifar10");
  CHECK(p.size() == 4);  // tofloat prepended
  CHECK(p.describe() == "tofloat,crop:32:4,flip:0.5,normalize:cifar10");
  CHECK(parse_transforms("raw").empty());
  CHECK(parse_transforms("").describe() == "tofloat");
  CHECK(parse_transforms("resize:40,centercrop:32:30").output_geometry({20, 20, 3}) == Geometry{32, 30, 3});
  CHECK(parse_transforms("normalize:0.5:0.25").size() == 2);
  expect_error([] { parse_transforms("crop:x"); }, {"crop:x", "bad number"});
  expect_error([] { parse_transforms("blur:3"); }, {"unknown transform", "blur"});
  expect_error([] { parse_transforms("flip:1:2"); }, {"flip"});
  expect_error([] { parse_transforms("tofloat,tofloat"); }, {"twice"});
  expect_error([] { parse_transforms("normalize:imagenet"); }, {"imagenet"});
  CHECK(parse_transforms("brightness:30,contrast:0.5:1.5,crop:32:4").describe() ==
        "brightness:30,contrast:0.5:1.5,tofloat,crop:32:4");
  CHECK(parse_transforms("crop:32:4,brightness:30,normalize:svhn").describe() ==
        "crop:32:4,brightness:30,tofloat,normalize:svhn");
  expect_error([] { parse_transforms("tofloat,brightness:30"); }, {"brightness:30", "before tofloat"});
  expect_error([] { parse_transforms("normalize:svhn,contrast:1:2"); }, {"normalize must come after"});
}

// =============================================================================================
// DataLoader
// =============================================================================================
namespace {

ImageDataset synthetic(int64_t n, int64_t h = 6, int64_t w = 6, int64_t c = 3) {
  ImageDataset ds;
  ds.images = Tensor::empty({n, h, w, c}, DType::u8);
  uint8_t* p = ds.images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c; ++k) *p++ = pixel_formula(i, y, x, k);
  ds.labels = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) ds.labels.data<int32_t>()[i] = int32_t(i % 7);
  ds.num_classes = 7;
  ds.source = "synthetic";
  return ds;
}

std::vector<Batch> run_epoch(DataLoader& loader, int64_t epoch, int64_t start = 0) {
  std::vector<Batch> out;
  loader.begin_epoch(epoch, start);
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

bool same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].index != b[i].index || a[i].images.shape() != b[i].images.shape()) return false;
    if (max_abs_diff(a[i].images, b[i].images) != 0.0) return false;
    if (a[i].labels.to_vector() != b[i].labels.to_vector()) return false;
  }
  return true;
}

LoaderOptions augmenting(int num_workers, int64_t prefetch) {
  LoaderOptions o;
  o.batch_size = 10;
  o.seed = 1234;
  o.transforms = parse_transforms("crop:6:2,flip,normalize:cifar10");
  o.num_workers = num_workers;
  o.prefetch = prefetch;
  return o;
}

// Recovers the dataset index of each sample of a raw (ToFloat only) batch from its first pixels.
std::vector<int64_t> sample_ids(const Batch& b, const ImageDataset& ds) {
  std::vector<int64_t> ids;
  const float* p = b.images.data<float>();
  const int64_t per = b.images.numel() / b.images.size(0);
  for (int64_t i = 0; i < b.images.size(0); ++i) {
    int64_t found = -1;
    for (int64_t n = 0; n < ds.size() && found < 0; ++n) {
      bool eq = true;
      for (int64_t k = 0; k < per && eq; ++k) eq = p[i * per + k] == float(ds.pixels(n)[k]) / 255.0f;
      if (eq) found = n;
    }
    ids.push_back(found);
  }
  return ids;
}

}  // namespace

TEST_CASE("DataLoader: batches cover the epoch exactly once, with and without drop_last") {
  const ImageDataset ds = synthetic(103);
  for (bool drop_last : {false, true})
    for (bool shuffle : {false, true}) {
      LoaderOptions o;
      o.batch_size = 10;
      o.drop_last = drop_last;
      o.shuffle = shuffle;
      o.seed = 5;
      DataLoader loader(ds, o);
      CHECK(loader.num_batches() == (drop_last ? 10 : 11));
      const auto batches = run_epoch(loader, 3);
      REQUIRE(int64_t(batches.size()) == loader.num_batches());
      std::vector<int64_t> all;
      for (size_t i = 0; i < batches.size(); ++i) {
        const Batch& b = batches[i];
        CHECK(b.index == int64_t(i));
        CHECK(b.images.dtype() == DType::f32);
        CHECK(b.images.is_contiguous(MemoryFormat::channels_last));
        CHECK(b.images.size(1) == 3);
        CHECK(b.images.size(0) == ((!drop_last && i == 10) ? 3 : 10));
        const auto ids = sample_ids(b, ds);
        for (size_t k = 0; k < ids.size(); ++k) {
          REQUIRE(ids[k] >= 0);
          CHECK(b.labels.data<int32_t>()[k] == ds.label(ids[k]));
        }
        all.insert(all.end(), ids.begin(), ids.end());
      }
      std::vector<int64_t> sorted = all;
      std::sort(sorted.begin(), sorted.end());
      CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // no sample twice
      CHECK(int64_t(all.size()) == (drop_last ? 100 : 103));
      const std::vector<int64_t> order = loader.permutation(3);
      CHECK(all == std::vector<int64_t>(order.begin(), order.begin() + std::ptrdiff_t(all.size())));
      if (!shuffle) CHECK(std::is_sorted(all.begin(), all.end()));
    }
}

TEST_CASE("DataLoader: the order is a function of (seed, epoch) only") {
  const ImageDataset ds = synthetic(50);
  LoaderOptions o;
  o.seed = 9;
  DataLoader a(ds, o), b(ds, o);
  o.seed = 10;
  DataLoader c(ds, o);
  CHECK(a.permutation(0) == b.permutation(0));
  CHECK(a.permutation(4) == b.permutation(4));
  CHECK(a.permutation(0) != a.permutation(1));
  CHECK(a.permutation(0) != c.permutation(0));
  std::vector<int64_t> p = a.permutation(2);
  std::sort(p.begin(), p.end());
  for (int64_t i = 0; i < 50; ++i) CHECK(p[size_t(i)] == i);
  // Same permutation from a loader that has run other epochs in between.
  (void)run_epoch(b, 7);
  CHECK(b.permutation(4) == a.permutation(4));
  CHECK(epoch_permutation(50, 9, 4) == a.permutation(4));
}

TEST_CASE("DataLoader: identical batches for 1 or 2 threads, any worker count, prefetch on or off") {
  const ImageDataset ds = synthetic(64);
  std::vector<std::vector<Batch>> runs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int workers : {0, 1, 2})
      for (int64_t prefetch : {0, 1, 3}) {
        DataLoader loader(ds, augmenting(workers, prefetch));
        runs.push_back(run_epoch(loader, 2));
      }
  }
  set_num_threads(2);
  for (size_t i = 1; i < runs.size(); ++i) CHECK_MESSAGE(same_batches(runs[0], runs[i]), "run ", i);
  // Augmentation really happens and differs between epochs.
  DataLoader loader(ds, augmenting(0, 2));
  CHECK(!same_batches(runs[0], run_epoch(loader, 3)));
}

TEST_CASE("DataLoader: resuming at batch k reproduces the tail of the full epoch") {
  const ImageDataset ds = synthetic(57);
  DataLoader loader(ds, augmenting(0, 2));
  const auto full = run_epoch(loader, 5);
  for (int64_t k : {0, 1, 4, 5, 6}) {
    DataLoader fresh(ds, augmenting(0, k % 2 ? 0 : 2));
    const auto tail = run_epoch(fresh, 5, k);
    CHECK(same_batches(tail, std::vector<Batch>(full.begin() + k, full.end())));
  }
  // make_batch is the same pure function.
  CHECK(same_batches({loader.make_batch(5, 3)}, {full[3]}));
  // Range-for over set_epoch.
  loader.set_epoch(5);
  std::vector<Batch> ranged;
  for (const Batch& b : loader) ranged.push_back(b);
  CHECK(same_batches(ranged, full));
}

TEST_CASE("DataLoader: shards of P ranks are contiguous parts whose union is the one-process batch") {
  // Data parallelism (docs/distributed.md): rank r of P takes [count*r/P, count*(r+1)/P) of every batch.
  const ImageDataset ds = synthetic(57);  // batches of 10: the last has 7
  DataLoader whole(ds, augmenting(0, 2));
  const auto full = run_epoch(whole, 4);
  for (int world : {2, 3, 4}) {
    std::vector<std::vector<Batch>> ranks;
    for (int r = 0; r < world; ++r) {
      DataLoader shard(ds, augmenting(0, r % 2 ? 0 : 2));
      shard.set_shard(r, world);
      CHECK(shard.num_batches() == whole.num_batches());
      ranks.push_back(run_epoch(shard, 4));
    }
    for (size_t b = 0; b < full.size(); ++b) {
      const int64_t count = full[b].labels.numel();
      int64_t at = 0;
      for (int r = 0; r < world; ++r) {
        const Batch& part = ranks[size_t(r)][b];
        CHECK(part.global_size == count);
        const auto [lo, hi] = DataLoader::shard_range(count, r, world);
        CHECK(lo == at);
        REQUIRE(part.labels.numel() == hi - lo);
        CHECK(same_batches(
            {part}, {Batch{full[b].images.narrow(0, lo, hi - lo).contiguous(MemoryFormat::channels_last),
                           full[b].labels.narrow(0, lo, hi - lo).contiguous(), full[b].index, full[b].epoch, count}}));
        at = hi;
      }
      CHECK(at == count);
    }
  }
  // Back to the whole batch.
  DataLoader back(ds, augmenting(0, 2));
  back.set_shard(1, 2);
  back.set_shard(0, 1);
  CHECK(same_batches(run_epoch(back, 4), full));
  CHECK_THROWS_AS(back.set_shard(2, 2), Error);
}

TEST_CASE("DataLoader: shutdown mid-epoch, restart, errors from the background thread") {
  set_num_threads(2);
  const ImageDataset ds = synthetic(200);
  {
    DataLoader loader(ds, augmenting(0, 4));
    loader.begin_epoch(0);
    Batch b;
    REQUIRE(loader.next(b));
    loader.begin_epoch(1, 3);  // abandons epoch 0 mid-way
    REQUIRE(loader.next(b));
    CHECK(b.index == 3);
    CHECK(b.epoch == 1);
  }  // destroyed with the producer blocked on a full queue

  struct Exploding final : Transform {
    void apply(ImageBuffer& img, Generator&) const override {
      if (img.pixels[0] == float(pixel_formula(150, 0, 0, 0))) throw Error("Exploding: sample 150");
    }
    std::string describe() const override { return "exploding"; }
  };
  // Batch 16: batches 0..8 hold samples 0..143 and batch 9 holds 150; batch 64: batch 2 holds it
  // and is processed in parallel chunks.
  for (const auto& [batch_size, good_batches] : {std::pair<int64_t, int64_t>{16, 9}, {64, 2}})
    for (int workers : {0, 2})
      for (int64_t prefetch : {0, 2}) {
        LoaderOptions o;
        o.batch_size = batch_size;
        o.shuffle = false;
        o.num_workers = workers;
        o.prefetch = prefetch;
        o.transforms = parse_transforms("raw");
        o.transforms.add(std::make_shared<Exploding>());
        DataLoader loader(ds, o);
        loader.begin_epoch(0);
        Batch b;
        int64_t delivered = 0;
        CHECK_THROWS_WITH_AS(
            [&] {
              while (loader.next(b)) ++delivered;
            }(),
            "Exploding: sample 150", Error);
        CHECK(delivered == good_batches);
      }

  // After the last batch next() keeps answering false.
  LoaderOptions small;
  small.batch_size = 100;
  DataLoader two(ds, small);
  two.begin_epoch(0);
  Batch b;
  CHECK(two.next(b));
  CHECK(two.next(b));
  CHECK(!two.next(b));
  CHECK(!two.next(b));

  LoaderOptions misfit;
  misfit.transforms = parse_transforms("crop:10");
  expect_error([&] { DataLoader bad(ds, misfit); }, {"RandomCrop", "10x10"});
  LoaderOptions zero;
  zero.batch_size = 0;
  expect_error([&] { DataLoader bad(ds, zero); }, {"batch_size"});
}

TEST_CASE("DataLoader: batch pixels are the transformed dataset pixels in NCHW logical order") {
  const ImageDataset ds = synthetic(4, 3, 2, 3);
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.transforms = parse_transforms("flip:1");
  DataLoader loader(ds, o);
  const Batch b = loader.make_batch(0, 0);
  REQUIRE(b.images.shape() == Shape{4, 3, 3, 2});
  const Tensor nchw = b.images.contiguous();
  const float* p = nchw.data<float>();
  int64_t bad = 0;
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 3; ++y)
        for (int64_t x = 0; x < 2; ++x)
          bad += p[((n * 3 + c) * 3 + y) * 2 + x] != float(pixel_formula(n, y, 1 - x, c)) / 255.0f;
  CHECK(bad == 0);
}

// Real data sets (MNIST, CIFAR-10, Fashion-MNIST), which may be absent, are read in
// tests/test_data_shared.cpp, where a missing set is reported to CTest as skipped.
