// ImageDataset, the IDX and CIFAR binary readers, and the named data sets.
#include "data/dataset.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/io.h"

namespace lowbit::data {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// ImageDataset
// ---------------------------------------------------------------------------------------------
ImageDataset ImageDataset::subset(int64_t begin, int64_t end) const {
  LOWBIT_CHECK(0 <= begin && begin <= end && end <= size(), "ImageDataset::subset: range [", begin, ", ", end,
               ") outside [0, ", size(), ") of ", source);
  ImageDataset out = *this;
  out.images = images.narrow(0, begin, end - begin);
  out.labels = labels.narrow(0, begin, end - begin);
  out.source = detail::concat(source, "[", begin, ":", end, "]");
  return out;
}

const uint8_t* ImageDataset::pixels(int64_t i) const {
  return images.data<uint8_t>() + i * images.size(1) * images.size(2) * images.size(3);
}

int32_t ImageDataset::label(int64_t i) const { return labels.data<int32_t>()[i]; }

void ImageDataset::validate() const {
  LOWBIT_CHECK(images.defined() && labels.defined(), "ImageDataset: ", source, ": undefined tensors");
  LOWBIT_CHECK(images.dtype() == DType::u8 && images.dim() == 4 && images.is_contiguous(), "ImageDataset: ", source,
               ": images must be contiguous uint8 [N, H, W, C], got ", dtype_name(images.dtype()), " ",
               shape_str(images.shape()));
  LOWBIT_CHECK(
      labels.dtype() == DType::i32 && labels.dim() == 1 && labels.is_contiguous() && labels.size(0) == images.size(0),
      "ImageDataset: ", source, ": labels must be contiguous int32 [", images.size(0), "], got ",
      dtype_name(labels.dtype()), " ", shape_str(labels.shape()));
  LOWBIT_CHECK(num_classes > 0, "ImageDataset: ", source, ": num_classes must be positive");
  LOWBIT_CHECK(class_names.empty() || int64_t(class_names.size()) == num_classes, "ImageDataset: ", source, ": ",
               class_names.size(), " class names for ", num_classes, " classes");
  const int32_t* l = labels.data<int32_t>();
  for (int64_t i = 0; i < size(); ++i)
    LOWBIT_CHECK(l[i] >= 0 && l[i] < num_classes, "ImageDataset: ", source, ": label ", l[i], " of sample ", i,
                 " outside [0, ", num_classes, ")");
}

ImageDataset concat_datasets(const std::vector<ImageDataset>& parts) {
  LOWBIT_CHECK(!parts.empty(), "concat_datasets: no data sets");
  int64_t total = 0;
  for (const auto& p : parts) {
    p.validate();
    LOWBIT_CHECK(p.height() == parts[0].height() && p.width() == parts[0].width() &&
                     p.channels() == parts[0].channels() && p.num_classes == parts[0].num_classes,
                 "concat_datasets: ", p.source, " (", shape_str(p.images.shape()), ", ", p.num_classes,
                 " classes) does not match ", parts[0].source, " (", shape_str(parts[0].images.shape()), ", ",
                 parts[0].num_classes, " classes)");
    total += p.size();
  }
  ImageDataset out = parts[0];
  out.images = Tensor::empty({total, out.height(), out.width(), out.channels()}, DType::u8);
  out.labels = Tensor::empty({total}, DType::i32);
  const int64_t per = out.height() * out.width() * out.channels();
  int64_t at = 0;
  out.source.clear();
  for (const auto& p : parts) {
    if (p.size()) {
      std::memcpy(out.images.data<uint8_t>() + at * per, p.pixels(0), size_t(p.size() * per));
      std::memcpy(out.labels.data<int32_t>() + at, p.labels.data<int32_t>(), size_t(p.size()) * sizeof(int32_t));
    }
    at += p.size();
    if (!out.source.empty()) out.source.push_back('+');
    out.source.append(p.source);
  }
  return out;
}

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

// ---------------------------------------------------------------------------------------------
// IDX (http://yann.lecun.com/exdb/mnist/): magic = 0x0000 | type 0x08 (ubyte) | ndim; then ndim
// big-endian uint32 sizes; then the row-major data.
// ---------------------------------------------------------------------------------------------
namespace {

struct IdxArray {
  std::vector<int64_t> dims;
  std::span<const uint8_t> data;  // the row-major elements, exactly prod(dims) bytes
};

// Checks and splits one IDX file's contents (already decompressed).
IdxArray parse_idx_array(std::span<const uint8_t> b, const std::string& path, uint32_t expected_magic,
                         const char* what) {
  IdxArray a;
  LOWBIT_CHECK(b.size() >= 4, "read_idx: ", path, ": truncated: ", b.size(), " bytes, shorter than the 4-byte magic");
  const uint32_t magic = load_be32(b.data());
  char hex[2][16];
  std::snprintf(hex[0], sizeof hex[0], "0x%08x", magic);
  std::snprintf(hex[1], sizeof hex[1], "0x%08x", expected_magic);
  LOWBIT_CHECK(magic == expected_magic, "read_idx: ", path, ": bad magic ", hex[0], " (expected ", hex[1], " for ",
               what, ")");
  const size_t ndim = magic & 0xff;
  const size_t header = 4 + 4 * ndim;
  LOWBIT_CHECK(b.size() >= header, "read_idx: ", path, ": truncated: expected a ", header, "-byte header, got ",
               b.size(), " bytes");
  int64_t count = 1;
  for (size_t d = 0; d < ndim; ++d) {
    const uint32_t n = load_be32(b.data() + 4 + 4 * d);
    a.dims.push_back(int64_t(n));
    // Checked before multiplying: the product of the dimensions must not overflow.
    LOWBIT_CHECK(n < (1u << 31) && (n == 0 || count <= (int64_t(1) << 40) / int64_t(n)), "read_idx: ", path,
                 ": size overflow: dimensions ", shape_str(a.dims), "... of ", what, " exceed 2^40 bytes");
    count *= int64_t(n);
  }
  const size_t expected = header + size_t(count);
  LOWBIT_CHECK(b.size() >= expected, "read_idx: ", path, ": truncated: expected ", expected, " bytes of ", what, " ",
               shape_str(a.dims), ", got ", b.size());
  LOWBIT_CHECK(b.size() == expected, "read_idx: ", path, ": ", b.size() - expected, " trailing bytes after ", expected,
               " bytes of ", what, " ", shape_str(a.dims));
  a.data = b.subspan(header, size_t(count));
  return a;
}

}  // namespace

ImageDataset read_idx(const std::string& images_path, const std::string& labels_path, int64_t num_classes) {
  const Bytes images = read_file_raw(images_path, "read_idx");
  const Bytes labels = read_file_raw(labels_path, "read_idx");
  return read_idx_data(images, images_path, labels, labels_path, num_classes);
}

ImageDataset read_idx_data(std::span<const uint8_t> images_file, const std::string& images_path,
                           std::span<const uint8_t> labels_file, const std::string& labels_path, int64_t num_classes) {
  LOWBIT_CHECK(num_classes > 0 && num_classes <= 256, "read_idx: num_classes ", num_classes, " outside [1, 256]");
  Bytes im_storage, lb_storage;
  const IdxArray im = parse_idx_array(gunzip_if_gzip(images_file, im_storage, images_path, "read_idx"), images_path,
                                      0x00000803, "images");
  const IdxArray lb = parse_idx_array(gunzip_if_gzip(labels_file, lb_storage, labels_path, "read_idx"), labels_path,
                                      0x00000801, "labels");
  const int64_t n = im.dims[0], h = im.dims[1], w = im.dims[2];
  LOWBIT_CHECK(n > 0, "read_idx: ", images_path, ": no images (the header declares ", shape_str(im.dims), ")");
  LOWBIT_CHECK(h > 0 && w > 0, "read_idx: ", images_path, ": zero height or width: the header declares ", n,
               " images of ", h, "x", w);
  LOWBIT_CHECK(lb.dims[0] == n, "read_idx: record counts differ: ", images_path, " has ", n, " images, ", labels_path,
               " has ", lb.dims[0], " labels");
  ImageDataset ds;
  ds.images = Tensor::empty({n, h, w, 1}, DType::u8);
  std::memcpy(ds.images.data<uint8_t>(), im.data.data(), size_t(n * h * w));
  ds.labels = Tensor::empty({n}, DType::i32);
  int32_t* l = ds.labels.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    l[i] = lb.data[size_t(i)];
    LOWBIT_CHECK(l[i] < num_classes, "read_idx: ", labels_path, ": label ", l[i], " of record ", i, " outside [0, ",
                 num_classes, ")");
  }
  ds.num_classes = num_classes;
  ds.source = images_path;
  return ds;
}

// ---------------------------------------------------------------------------------------------
// CIFAR binary version (https://www.cs.toronto.edu/~kriz/cifar.html): fixed-size records.
// ---------------------------------------------------------------------------------------------
namespace {

constexpr int64_t kCifarSide = 32, kCifarPixels = 3 * 32 * 32;

// Appends the records of one file's contents (raw or gzip, as stored): `label_bytes` label bytes
// then 3072 planar pixel bytes; label_index picks which label byte is the label, checked against
// num_classes.
void append_cifar_file(std::span<const uint8_t> file, const std::string& path, const char* who, int64_t label_bytes,
                       int64_t label_index, int64_t num_classes, std::vector<uint8_t>& pixels,
                       std::vector<int32_t>& labels) {
  Bytes storage;
  const std::span<const uint8_t> b = gunzip_if_gzip(file, storage, path, who);
  const int64_t record = label_bytes + kCifarPixels;
  LOWBIT_CHECK(!b.empty(), who, ": ", path, ": empty file (no records)");
  LOWBIT_CHECK(int64_t(b.size()) % record == 0, who, ": ", path, ": truncated or malformed: ", b.size(),
               " bytes is not a whole number of ", record, "-byte records (", int64_t(b.size()) / record, " records + ",
               int64_t(b.size()) % record, " bytes)");
  const int64_t n = int64_t(b.size()) / record;
  const size_t base = pixels.size();
  pixels.resize(base + size_t(n * kCifarPixels));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* rec = b.data() + i * record;
    const int32_t label = rec[label_index];
    LOWBIT_CHECK(label < num_classes, who, ": ", path, ": label ", label, " of record ", i, " outside [0, ",
                 num_classes, ") (not a CIFAR file, or wrong CIFAR variant?)");
    labels.push_back(label);
    const uint8_t* planes = rec + label_bytes;
    uint8_t* out = pixels.data() + base + size_t(i * kCifarPixels);
    for (int64_t p = 0; p < kCifarSide * kCifarSide; ++p) {
      out[3 * p + 0] = planes[p];
      out[3 * p + 1] = planes[1024 + p];
      out[3 * p + 2] = planes[2048 + p];
    }
  }
}

ImageDataset make_cifar(std::vector<uint8_t>&& pixels, std::vector<int32_t>&& labels, int64_t num_classes,
                        std::string source) {
  const int64_t n = int64_t(labels.size());
  ImageDataset ds;
  ds.images = Tensor::empty({n, kCifarSide, kCifarSide, 3}, DType::u8);
  if (n) std::memcpy(ds.images.data<uint8_t>(), pixels.data(), pixels.size());
  ds.labels = Tensor::empty({n}, DType::i32);
  if (n) std::memcpy(ds.labels.data<int32_t>(), labels.data(), labels.size() * sizeof(int32_t));
  ds.num_classes = num_classes;
  ds.source = std::move(source);
  return ds;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Class names from a text file next to `data_file` when it has exactly num_classes lines.
std::vector<std::string> names_beside(const std::string& data_file, const std::string& name, int64_t num_classes) {
  const fs::path p = fs::path(data_file).parent_path() / name;
  if (!file_exists(p.string())) return {};
  auto lines = read_lines(p.string());
  if (int64_t(lines.size()) != num_classes) return {};
  return lines;
}

}  // namespace

ImageDataset read_cifar10(const std::vector<std::string>& batch_files) {
  LOWBIT_CHECK(!batch_files.empty(), "read_cifar10: no files given");
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  std::string source;
  for (const auto& f : batch_files) {
    append_cifar_file(read_file_raw(f, "read_cifar10"), f, "read_cifar10", 1, 0, 10, pixels, labels);
    if (!source.empty()) source.push_back(',');
    source.append(f);
  }
  ImageDataset ds = make_cifar(std::move(pixels), std::move(labels), 10, source);
  ds.class_names = names_beside(batch_files[0], "batches.meta.txt", 10);
  if (ds.class_names.empty()) ds.class_names = cifar10_class_names();
  return ds;
}

ImageDataset read_cifar10_data(std::span<const uint8_t> batch_file, const std::string& name) {
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  append_cifar_file(batch_file, name, "read_cifar10", 1, 0, 10, pixels, labels);
  ImageDataset ds = make_cifar(std::move(pixels), std::move(labels), 10, name);
  ds.class_names = cifar10_class_names();
  return ds;
}

ImageDataset read_cifar100(const std::string& file, bool fine) {
  ImageDataset ds = read_cifar100_data(read_file_raw(file, "read_cifar100"), file, fine);
  ds.class_names = names_beside(file, fine ? "fine_label_names.txt" : "coarse_label_names.txt", ds.num_classes);
  return ds;
}

ImageDataset read_cifar100_data(std::span<const uint8_t> file, const std::string& name, bool fine) {
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  const int64_t classes = fine ? 100 : 20;
  append_cifar_file(file, name, "read_cifar100", 2, fine ? 1 : 0, classes, pixels, labels);
  return make_cifar(std::move(pixels), std::move(labels), classes, name);
}

// ---------------------------------------------------------------------------------------------
// Named data sets
// ---------------------------------------------------------------------------------------------
namespace {

std::string require(const std::string& dir, const std::string& name, const std::string& set, const std::string& how) {
  const std::string p = find_raw_or_gz((fs::path(dir) / name).string());
  LOWBIT_CHECK(!p.empty(), "load_dataset(", set, "): file not found: ", (fs::path(dir) / name).string(), "[.gz]; ",
               how);
  return p;
}

std::string shared_data_dir(const std::string& sub, const std::string& set) {
  const char* env = std::getenv("LOWBIT_SHARED_DATA");
  LOWBIT_CHECK(env && *env, "load_dataset(", set, "): no directory given and LOWBIT_SHARED_DATA is not set; use \"",
               set, ":DIR\"");
  return (fs::path(env) / sub).string();
}

DataSplits load_idx_dir(const std::string& dir, const std::string& set, const std::string& how) {
  // Look for all four files first so a missing one is reported before any reading.
  const std::string train_images = require(dir, "train-images-idx3-ubyte", set, how);
  const std::string train_labels = require(dir, "train-labels-idx1-ubyte", set, how);
  const std::string test_images = require(dir, "t10k-images-idx3-ubyte", set, how);
  const std::string test_labels = require(dir, "t10k-labels-idx1-ubyte", set, how);
  DataSplits s;
  s.train = read_idx(train_images, train_labels);
  s.test = read_idx(test_images, test_labels);
  return s;
}

}  // namespace

DataSplits load_dataset(const std::string& spec) {
  const auto colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  std::string dir = colon == std::string::npos ? "" : spec.substr(colon + 1);
  DataSplits s;
  if (name == "fashion-mnist") {
    if (dir.empty()) dir = "/usr/share/datasets/fashion-mnist";
    s = load_idx_dir(dir, name, "install it with `apt-get install dataset-fashion-mnist`");
    s.train.class_names = s.test.class_names = fashion_mnist_class_names();
  } else if (name == "mnist") {
    if (dir.empty()) dir = shared_data_dir("mnist", name);
    s = load_idx_dir(dir, name, "get the four IDX files from http://yann.lecun.com/exdb/mnist/");
  } else if (name == "cifar10") {
    if (dir.empty()) dir = shared_data_dir("cifar-10", name);
    const std::string how = "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
    std::vector<std::string> train;
    for (int i = 1; i <= 5; ++i) train.push_back(require(dir, "data_batch_" + std::to_string(i) + ".bin", name, how));
    s.train = read_cifar10(train);
    // The official test batch; else the shared folder's substitutes (README there): the full
    // JPEG-recovered (lossy) test set, else its bit-exact first 1,017 records.
    std::string test = find_raw_or_gz((fs::path(dir) / "test_batch.bin").string());
    std::string note;
    if (test.empty()) {
      test = find_raw_or_gz((fs::path(dir) / "test_batch.lossy.bin").string());
      note = "lossy test set (pixels recovered from JPEG copies; official order and labels)";
    }
    if (test.empty()) {
      test = find_raw_or_gz((fs::path(dir) / "test_batch.first1017.exact.bin").string());
      note = "first 1,017 official test images only (bit-exact)";
    }
    LOWBIT_CHECK(!test.empty(), "load_dataset(cifar10): no test batch in ", dir,
                 " (test_batch.bin[.gz], test_batch.lossy.bin.gz or test_batch.first1017.exact.bin.gz); ", how);
    s.test = read_cifar10({test});
    s.test.note = note;
  } else if (name == "cifar100" || name == "cifar100-coarse") {
    LOWBIT_CHECK(!dir.empty(), "load_dataset(", name, "): give the directory: \"", name, ":DIR\"");
    const std::string how = "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
    const bool fine = name == "cifar100";
    s.train = read_cifar100(require(dir, "train.bin", name, how), fine);
    s.test = read_cifar100(require(dir, "test.bin", name, how), fine);
  } else if (name == "svhn" || name == "svhn+extra") {
    LOWBIT_CHECK(!dir.empty(), "load_dataset(", name, "): give the directory: \"", name, ":DIR\"");
    const std::string how =
        "get train_32x32.mat, test_32x32.mat (and extra_32x32.mat) from http://ufldl.stanford.edu/housenumbers/";
    const std::string train = require(dir, "train_32x32.mat", name, how);
    const std::string test = require(dir, "test_32x32.mat", name, how);
    const std::string extra = name == "svhn+extra" ? require(dir, "extra_32x32.mat", name, how) : "";
    s.train = read_svhn_mat(train);
    if (!extra.empty()) s.train = concat_datasets({s.train, read_svhn_mat(extra)});
    s.test = read_svhn_mat(test);
  } else if (name == "folder") {
    LOWBIT_CHECK(!dir.empty(), "load_dataset(folder): give the directory: \"folder:DIR\" or \"folder:DIR@SIZE\"");
    int64_t resize = 0;
    if (const auto at = dir.rfind('@'); at != std::string::npos) {
      const std::string size_str = dir.substr(at + 1);
      char* end = nullptr;
      resize = std::strtoll(size_str.c_str(), &end, 10);
      LOWBIT_CHECK(!size_str.empty() && *end == '\0' && resize > 0, "load_dataset(folder): bad size \"", size_str,
                   "\" in ", spec);
      dir = dir.substr(0, at);
    }
    const fs::path root(dir);
    std::error_code ec;
    LOWBIT_CHECK(fs::is_directory(root / "train", ec), "load_dataset(folder): ", (root / "train").string(),
                 ": not a directory (expected DIR/train/<class>/... and DIR/val or DIR/test)");
    s.train = read_image_folder((root / "train").string(), resize);
    fs::path test_dir;
    for (const char* t : {"val", "test"})
      if (fs::is_directory(root / t, ec)) {
        test_dir = root / t;
        break;
      }
    LOWBIT_CHECK(!test_dir.empty(), "load_dataset(folder): neither ", (root / "val").string(), " nor ",
                 (root / "test").string(), " is a directory");
    if (file_exists((test_dir / "val_annotations.txt").string()))
      s.test = read_image_annotations(test_dir.string(), s.train.class_names, resize);
    else
      s.test = read_image_folder(test_dir.string(), resize);
    LOWBIT_CHECK(s.test.class_names == s.train.class_names, "load_dataset(folder): ", test_dir.string(),
                 " has classes different from ", (root / "train").string());
  } else {
    throw Error(detail::concat("load_dataset: unknown data set \"", spec,
                               "\" (known: fashion-mnist[:DIR], mnist[:DIR], cifar10[:DIR], cifar100:DIR, "
                               "cifar100-coarse:DIR, svhn[+extra]:DIR, folder:DIR[@SIZE])"));
  }
  return s;
}

}  // namespace lowbit::data
