// Writes the fuzzers' seed corpora: small valid files of every format, from the tests' fixture
// writers (tests/data_fixtures.h), stb_image_write, save_checkpoint and serialize_model (small
// hand-built integer models, as tests/test_deploy.cpp's), plus slices of a few KB of the real MNIST
// and CIFAR-10 files when the shared data folder is given.
//
// Usage: fuzz_make_corpus OUT_DIR [SHARED_DATA_DIR]   (writes OUT_DIR/<fuzzer>/<seed>)
// The committed corpus (tests/fuzz/corpus) is synthetic only (no data set excerpts in the repo):
//   fuzz_make_corpus tests/fuzz/corpus
// plus the hand-written config files of tests/fuzz/corpus/config. The long runs of
// docs/reliability.md also seeded their working corpus with the real-file slices:
//   fuzz_make_corpus WORK_DIR ../shared/data
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>

#include "core/random.h"
#include "core/serialize.h"
#include "data/io.h"
#include "data_fixtures.h"
#include "deploy/model_file.h"
#include "deploy_fixtures.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

using namespace lowbit;
using namespace lowbit::data;
using namespace lowbit::fixtures;
namespace fs = std::filesystem;

namespace {

fs::path out_root;
const fs::path tmp = fs::temp_directory_path() / ("lowbit_make_corpus_" + std::to_string(::getpid()));

void put(const std::string& fuzzer, const std::string& name, const Bytes& bytes) {
  fs::create_directories(out_root / fuzzer);
  write_file_bytes((out_root / fuzzer / name).string(), bytes);
  std::printf("%s/%s: %zu bytes\n", fuzzer.c_str(), name.c_str(), bytes.size());
}

Bytes gzip(const Bytes& b) {
  const std::string p = (tmp / "gz").string();
  write_file_bytes(p, b, true);
  return read_file_raw(p, "make_corpus");
}

Bytes cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

const Bytes kSeparator = {'-', '-', 'l', 'a', 'b', 'e', 'l', 's', '-', '-'};

// Integer models (fuzz_model.cpp): chain_model() and graph_model() (tests/deploy_fixtures.h).
using deploy::Model;
using deploy::Op;
using deploy::OpKind;
using deploy::WeightCoding;
using deploy::WeightOp;

// The smallest kind of model: 3x3 grey image, flatten, a 1-bit (odd: -1/+1) linear kept as
// accumulators, dequantize; and a requantized 1x1 conv with a stride and padding before it.
Model linear_model(bool with_conv) {
  Model m;
  Op in;
  in.kind = OpKind::input;
  in.input.C = 1, in.input.H = 3, in.input.W = 3;
  m.ops.push_back(in);
  int64_t features = 9;
  if (with_conv) {
    Op c;
    c.kind = OpKind::conv;
    c.layer.name = "c1";
    c.layer.K = 2, c.layer.C = 1, c.layer.R = c.layer.S = 1, c.layer.stride_h = c.layer.stride_w = 2;
    c.layer.pad_h = c.layer.pad_w = 1, c.layer.in_zero_point = 3, c.layer.bits = 2, c.layer.out_qmax = 255;
    c.layer.scale = {0.004, 0.003}, c.layer.offset = {0.25, 0.5}, c.layer.weights = {1, -2};
    m.ops.push_back(c);
    features = 3 * 3 * 2;  // 3x3 padded to 5x5, stride 2: 3x3
  }
  Op f;
  f.kind = OpKind::flatten;
  m.ops.push_back(f);
  Op l;
  l.kind = OpKind::linear;
  l.layer.name = "fc";
  l.layer.K = 2, l.layer.C = features, l.layer.bits = 1, l.layer.coding = WeightCoding::odd, l.layer.out_qmax = 0;
  l.layer.scale = {0.5, 0.25}, l.layer.offset = {0, 1};
  for (int64_t i = 0; i < l.layer.numel(); ++i) l.layer.weights.push_back(int16_t(i % 3 ? 1 : -1));
  m.ops.push_back(l);
  Op d;
  d.kind = OpKind::dequantize;
  d.dequant.scale = {0.5, 0.25}, d.dequant.offset = {0, 1};
  m.ops.push_back(d);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [SHARED_DATA_DIR]\n", argv[0]);
    return 2;
  }
  out_root = argv[1];
  const fs::path shared = argc > 2 ? argv[2] : "";
  fs::create_directories(tmp);

  // IDX: images, "--labels--", labels (fuzz_idx.cpp).
  const Bytes im = idx_images(3, 4, 3), lb = idx_labels({1, 9, 0});
  put("idx", "synthetic", cat(cat(im, kSeparator), lb));
  put("idx", "synthetic_gz", cat(cat(gzip(im), kSeparator), gzip(lb)));
  if (!shared.empty()) {
    const Bytes images = read_file_bytes((shared / "mnist/t10k-images-idx3-ubyte.gz").string(), "make_corpus");
    const Bytes labels = read_file_bytes((shared / "mnist/t10k-labels-idx1-ubyte.gz").string(), "make_corpus");
    Bytes im2(images.begin(), images.begin() + 16 + 2 * 784), lb2(labels.begin(), labels.begin() + 8 + 2);
    im2[7] = 2, lb2[7] = 2;  // the header's image / label count: 2
    put("idx", "mnist_t10k_2", cat(cat(im2, kSeparator), lb2));
    put("idx", "mnist_t10k_2_gz", cat(cat(gzip(im2), kSeparator), gzip(lb2)));
  }

  // CIFAR-10 (3073-byte records) and CIFAR-100 (3074-byte records); fuzz_cifar.cpp reads both ways.
  put("cifar", "cifar10_synthetic", cifar_records({{7}}));
  put("cifar", "cifar100_synthetic", cifar_records({{19, 99}}));
  put("cifar", "cifar10_synthetic_2_gz", gzip(cifar_records({{0}, {9}})));
  Bytes cifar_real;
  if (!shared.empty()) {
    const Bytes batch = read_file_bytes((shared / "cifar-10/data_batch_1.bin.gz").string(), "make_corpus");
    cifar_real.assign(batch.begin(), batch.begin() + 3073);
    put("cifar", "cifar10_batch1_1", cifar_real);
    put("cifar", "cifar10_batch1_2_gz", gzip(Bytes(batch.begin(), batch.begin() + 2 * 3073)));
  }

  // SVHN MAT v5 files: plain and miCOMPRESSED elements, y as double and uint8, a gzip-wrapped file.
  put("svhn_mat", "plain_y_double", svhn_mat({1, 10}, false, true));
  put("svhn_mat", "compressed_y_uint8", svhn_mat({3}, true, false));
  put("svhn_mat", "compressed_y_double", svhn_mat({10, 5}, true, true));
  put("svhn_mat", "plain_gz", gzip(svhn_mat({7}, false, false)));

  // Images: PNG (grey, grey+alpha, RGB, RGBA), BMP (RGB, RGBA), baseline JPEG (grey, RGB).
  for (int c : {1, 2, 3, 4})
    put("image", "png_c" + std::to_string(c), encode_image("png", 5, 4, c, formula_image(c, 4, 5, c)));
  for (int c : {3, 4})
    put("image", "bmp_c" + std::to_string(c), encode_image("bmp", 5, 4, c, formula_image(c, 4, 5, c)));
  for (int c : {1, 3})
    put("image", "jpg_c" + std::to_string(c), encode_image("jpg", 9, 7, c, formula_image(c, 7, 9, c)));
  if (!cifar_real.empty()) {  // the first CIFAR-10 training image, HWC
    std::vector<uint8_t> px(3072);
    for (int p = 0; p < 1024; ++p)
      for (int c = 0; c < 3; ++c) px[size_t(3 * p + c)] = cifar_real[size_t(1 + 1024 * c + p)];
    put("image", "cifar10_batch1_0_png", encode_image("png", 32, 32, 3, px));
    put("image", "cifar10_batch1_0_jpg", encode_image("jpg", 32, 32, 3, px));
  }

  // Checkpoints: a whole file, and its payload alone (fuzz_checkpoint.cpp adds the header).
  Checkpoint c;
  c.meta["format"] = std::string("lowbit-train");
  c.meta["epoch"] = int64_t{3};
  c.meta["lr"] = 0.05;
  c.tensors["model.conv1.weight"] = Tensor::from_vector(std::vector<float>{0.5f, -1.f, 2.f, 0.25f}, {2, 1, 1, 2});
  c.tensors["model.bn1.running_var"] = Tensor::from_vector(std::vector<double>{1.0, 2.0}, {2});
  c.tensors["labels"] = Tensor::from_vector(std::vector<int32_t>{1, -2, 3}, {3});
  c.tensors["codes"] = Tensor::from_vector(std::vector<int8_t>{-1, 1}, {2});
  c.tensors["bytes"] = Tensor::from_vector(std::vector<uint8_t>{0, 255}, {1, 2});
  c.tensors["empty"] = Tensor::empty({0, 4});
  const std::string path = (tmp / "c.ckpt").string();
  save_checkpoint(path, c);
  const Bytes file = read_file_raw(path, "make_corpus");
  put("checkpoint", "file", file);
  put("checkpoint", "payload", Bytes(file.begin() + 28, file.end()));

  // Integer models: whole files (version 2, or 3 with signed codes; version 4 with every layer's
  // weights Huffman-coded: NAME_coded.lbq, or pruned and run-length coded: NAME_rle.lbq), and their
  // payloads alone at version 4 (fuzz_model.cpp adds a version-4 header), packed and coded.
  const std::pair<const char*, Model> models[] = {{"chain", chain_model()},
                                                  {"graph", graph_model()},
                                                  {"linear", linear_model(false)},
                                                  {"conv_linear", linear_model(true)},
                                                  {"signed", signed_model()}};
  for (const auto& [name, model] : models) {
    const std::string lbq = deploy::serialize_model(model);
    const std::string v4 = deploy::serialize_model(model, deploy::kModelVersion);
    put("model", std::string(name) + ".lbq", Bytes(lbq.begin(), lbq.end()));
    put("model", std::string(name) + "_payload", Bytes(v4.begin() + 32, v4.end()));
    Model coded = model;
    for (deploy::Op& op : coded.ops) op.layer.storage = deploy::WeightStorage::huffman;
    const std::string c = deploy::serialize_model(coded);
    put("model", std::string(name) + "_coded.lbq", Bytes(c.begin(), c.end()));
    put("model", std::string(name) + "_coded_payload", Bytes(c.begin() + 32, c.end()));
    // Storage 2 (zero run-length + Huffman) on the two's complement layers, two thirds of their
    // weights pruned to 0 so the runs vary; the odd-coded ones (no zero weight) Huffman-coded.
    Model rle = model;
    bool any = false;
    for (deploy::Op& op : rle.ops) {
      if (op.kind != OpKind::conv && op.kind != OpKind::linear) continue;
      if (op.layer.coding == WeightCoding::odd) {
        op.layer.storage = deploy::WeightStorage::huffman;
        continue;
      }
      for (size_t j = 0; j < op.layer.weights.size(); ++j)
        if (j % 3 || j > op.layer.weights.size() / 2) op.layer.weights[j] = 0;  // a long run at the end
      op.layer.storage = deploy::WeightStorage::huffman_rle;
      any = true;
    }
    if (!any) continue;
    const std::string r = deploy::serialize_model(rle);
    put("model", std::string(name) + "_rle.lbq", Bytes(r.begin(), r.end()));
    put("model", std::string(name) + "_rle_payload", Bytes(r.begin() + 32, r.end()));
  }

  fs::remove_all(tmp);
  return 0;
}
