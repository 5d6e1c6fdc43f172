// Checkpoint files: round trip of tensors and typed metadata, atomic replacement, and clear errors
// on truncated, corrupt or foreign files.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/random.h"
#include "core/serialize.h"

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("lowbit_test_serialize_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

Checkpoint sample() {
  Generator gen(7);
  Checkpoint c;
  c.meta["epoch"] = int64_t{3};
  c.meta["lr"] = 0.05;
  c.meta["model"] = std::string("resnet20");
  c.tensors["model.conv1.weight"] = Tensor::randn({16, 3, 3, 3}, gen);
  c.tensors["model.bn1.running_var"] = Tensor::rand({16}, gen, DType::f64);
  c.tensors["labels"] = Tensor::from_vector(std::vector<int32_t>{1, -2, 3}, {3});
  c.tensors["codes"] = Tensor::from_vector(std::vector<uint8_t>{0, 255}, {2});
  c.tensors["empty"] = Tensor::zeros({0, 4});
  // A non-contiguous view is saved by value in row-major order.
  c.tensors["view"] = Tensor::arange(12).reshape({3, 4}).t();
  return c;
}

std::string read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

std::string error_of(const std::string& path) {
  try {
    load_checkpoint(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("checkpoint round trip keeps every tensor bit for bit and typed metadata") {
  TempDir dir;
  const Checkpoint c = sample();
  save_checkpoint(dir.file("a.ckpt"), c);
  const Checkpoint r = load_checkpoint(dir.file("a.ckpt"));
  CHECK(r.get_int("epoch") == 3);
  CHECK(r.get_double("lr") == 0.05);
  CHECK(r.get_string("model") == "resnet20");
  CHECK_THROWS_AS(r.get_int("lr"), Error);
  CHECK_THROWS_AS(r.get_string("missing"), Error);
  REQUIRE(r.tensors.size() == c.tensors.size());
  for (const auto& [name, t] : c.tensors) {
    const Tensor& u = r.tensors.at(name);
    CHECK(u.dtype() == t.dtype());
    CHECK(u.shape() == t.shape());
    CHECK(u.to_vector() == t.to_vector());
  }
  const auto model = r.tensors_with_prefix("model.");
  CHECK(model.size() == 2);
  CHECK(model.count("conv1.weight") == 1);
  CHECK_FALSE(fs::exists(dir.file("a.ckpt.tmp")));
}

TEST_CASE("saving replaces an existing checkpoint atomically") {
  TempDir dir;
  Checkpoint c = sample();
  save_checkpoint(dir.file("a.ckpt"), c);
  c.meta["epoch"] = int64_t{4};
  save_checkpoint(dir.file("a.ckpt"), c);
  CHECK(load_checkpoint(dir.file("a.ckpt")).get_int("epoch") == 4);
  // A save that cannot complete leaves the previous file intact.
  Checkpoint bad = c;
  bad.tensors["undefined"] = Tensor();
  CHECK_THROWS_AS(save_checkpoint(dir.file("a.ckpt"), bad), Error);
  CHECK(load_checkpoint(dir.file("a.ckpt")).get_int("epoch") == 4);
  // An unwritable folder is a clear error.
  CHECK_THROWS_WITH_AS(save_checkpoint(dir.file("no/such/dir/a.ckpt"), c), doctest::Contains("cannot create"), Error);
}

TEST_CASE("truncated, corrupt and foreign files fail with a message naming the file") {
  TempDir dir;
  const std::string good = dir.file("good.ckpt");
  save_checkpoint(good, sample());
  const std::string bytes = read_bytes(good);

  SUBCASE("missing file") { CHECK(error_of(dir.file("nope.ckpt")).find("nope.ckpt") != std::string::npos); }
  SUBCASE("shorter than the header") {
    write_bytes(dir.file("t.ckpt"), bytes.substr(0, 10));
    const std::string e = error_of(dir.file("t.ckpt"));
    CHECK(e.find("t.ckpt") != std::string::npos);
    CHECK(e.find("truncated") != std::string::npos);
  }
  SUBCASE("payload cut short") {
    write_bytes(dir.file("t.ckpt"), bytes.substr(0, bytes.size() - 100));
    CHECK(error_of(dir.file("t.ckpt")).find("truncated") != std::string::npos);
  }
  SUBCASE("flipped byte in a tensor") {
    std::string b = bytes;
    b[b.size() - 5] ^= 0x40;
    write_bytes(dir.file("c.ckpt"), b);
    const std::string e = error_of(dir.file("c.ckpt"));
    CHECK(e.find("c.ckpt") != std::string::npos);
    CHECK(e.find("checksum") != std::string::npos);
  }
  SUBCASE("not a checkpoint") {
    write_bytes(dir.file("x.ckpt"), std::string(64, 'x'));
    CHECK(error_of(dir.file("x.ckpt")).find("bad magic") != std::string::npos);
  }
  SUBCASE("future version") {
    std::string b = bytes;
    b[8] = 99;
    write_bytes(dir.file("v.ckpt"), b);
    CHECK(error_of(dir.file("v.ckpt")).find("version 99") != std::string::npos);
  }
}
