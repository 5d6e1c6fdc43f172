// In-memory image data sets and the readers of their standard file formats.
//
// Contract
//   ImageDataset holds uint8 pixels NHWC [N, H, W, C] (row-major) and int32 labels [N] in
//   [0, num_classes). Readers validate everything they read (magic numbers, header sizes, record
//   counts, file sizes, label ranges) and throw lowbit::Error naming the file and the problem; they
//   never crash and never read short silently. Files may be raw or gzip-compressed wherever the
//   format is a plain byte stream (IDX, CIFAR binary). Formats: docs/data.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lowbit::data {

struct ImageDataset {
  Tensor images;  // uint8 [N, H, W, C]
  Tensor labels;  // int32 [N]
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  // empty or num_classes names
  std::string source;                    // file(s) or directory, for messages
  std::string note;                      // caveats, e.g. "lossy test set"

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  int64_t height() const { return images.size(1); }
  int64_t width() const { return images.size(2); }
  int64_t channels() const { return images.size(3); }
  // Rows [begin, end) as a view sharing the pixels (e.g. a validation split).
  ImageDataset subset(int64_t begin, int64_t end) const;
  // Pixels of sample i (H*W*C bytes, HWC) and its label.
  const uint8_t* pixels(int64_t i) const;
  int32_t label(int64_t i) const;
  // Throws unless shapes, dtypes and label ranges are consistent.
  void validate() const;
};

// MNIST / Fashion-MNIST IDX files (big-endian header: magic 0x00000803 images [N, H, W],
// 0x00000801 labels [N]); raw or gzip.
ImageDataset read_idx(const std::string& images_path, const std::string& labels_path, int64_t num_classes = 10);
// CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B,
// each row-major 32x32); files are concatenated in order. Raw or gzip.
ImageDataset read_cifar10(const std::vector<std::string>& batch_files);
// CIFAR-100 binary version: records of 2 label bytes (coarse, fine) + 3072 pixel bytes.
ImageDataset read_cifar100(const std::string& file, bool fine = true);
// SVHN cropped digits: MATLAB 5.0 MAT file (little-endian) with X: 32x32x3xN uint8 column-major
// and y: Nx1 (any numeric class), label 10 meaning digit 0. Elements may be miCOMPRESSED.
ImageDataset read_svhn_mat(const std::string& path);
// root/<class>/<image>.{png,jpg,jpeg,bmp} (classes = sorted sub-directories; a class directory
// holding an `images/` sub-directory, as Tiny-ImageNet's train/<wnid>/images, reads that). Pixels
// are decoded to RGB; resize_to > 0 resizes each image bilinearly to resize_to x resize_to,
// otherwise all images must share one size.
ImageDataset read_image_folder(const std::string& root, int64_t resize_to = 0);
// Tiny-ImageNet validation layout: root/images/*.JPEG labelled by root/val_annotations.txt
// (file \t wnid ...); class order given by `class_names` (the train set's wnids).
ImageDataset read_image_annotations(const std::string& root, const std::vector<std::string>& class_names,
                                    int64_t resize_to = 0);

// The readers on file contents held in memory: `file` is the file's bytes as stored on disk (raw or
// gzip) and `name` labels messages. The path-based readers above read their files and parse them
// with the same code (the fuzzers of tests/fuzz/ call these directly).
ImageDataset read_idx_data(std::span<const uint8_t> images_file, const std::string& images_name,
                           std::span<const uint8_t> labels_file, const std::string& labels_name,
                           int64_t num_classes = 10);
ImageDataset read_cifar10_data(std::span<const uint8_t> batch_file, const std::string& name);
ImageDataset read_cifar100_data(std::span<const uint8_t> file, const std::string& name, bool fine = true);
ImageDataset read_svhn_mat_data(std::span<const uint8_t> file, const std::string& name);
// One image of a folder data set (PNG, JPEG, BMP) decoded to RGB, resized bilinearly to
// resize_to x resize_to when resize_to > 0. Throws naming `name` when the bytes do not decode, are
// truncated (a BMP shorter than its pixel rows, a JPEG without its end-of-image marker), declare a
// zero height or width, or more than max_pixels pixels (checked before decoding).
struct DecodedImage {
  std::vector<uint8_t> pixels;  // [height, width, 3]
  int64_t height = 0, width = 0;
};
inline constexpr int64_t kMaxImagePixels = int64_t(1) << 26;  // e.g. 8192 x 8192
DecodedImage decode_image(std::span<const uint8_t> file, const std::string& name, int64_t resize_to = 0,
                          int64_t max_pixels = kMaxImagePixels);

// The samples of `parts` in order (same image geometry and class count required).
ImageDataset concat_datasets(const std::vector<ImageDataset>& parts);

struct DataSplits {
  ImageDataset train, test;
};
// Named data sets:
//   "fashion-mnist" (Debian package dataset-fashion-mnist, /usr/share/datasets/fashion-mnist),
//   "fashion-mnist:DIR", "mnist:DIR", "cifar10:DIR", "cifar100:DIR", "cifar100-coarse:DIR",
//   "svhn:DIR", "svhn+extra:DIR" (train = train_32x32 + extra_32x32), "folder:DIR" (DIR/train + DIR/val or DIR/test;
//   Tiny-ImageNet's val layout too), "folder:DIR@SIZE" resizes to SIZE x SIZE.
// "mnist" and "cifar10" without a directory use $LOWBIT_SHARED_DATA/{mnist,cifar-10}.
DataSplits load_dataset(const std::string& spec);

// Class names used when a data set ships none.
const std::vector<std::string>& cifar10_class_names();
const std::vector<std::string>& fashion_mnist_class_names();

}  // namespace lowbit::data
