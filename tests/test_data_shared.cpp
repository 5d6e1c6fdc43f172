// Data readers on real data sets that may be absent: MNIST and the CIFAR-10 test prefix from the
// shared data folder (LOWBIT_SHARED_DATA, set by tests/CMakeLists.txt), Fashion-MNIST from the
// Debian package. A missing set is reported as skipped (LOWBIT_SKIP, tests/test_skip.h), never as
// passed; tests/CMakeLists.txt registers each case here as its own CTest test, so one absent set
// skips only its own case.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "test_skip.h"

using namespace lowbit;
using namespace lowbit::data;
namespace fs = std::filesystem;

namespace {

// LOWBIT_SHARED_DATA/sub, or an empty path when the variable is unset.
fs::path shared_data(const std::string& sub) {
  const char* shared = std::getenv("LOWBIT_SHARED_DATA");
  return shared && *shared ? fs::path(shared) / sub : fs::path();
}

std::string missing(const std::string& sub) {
  const char* shared = std::getenv("LOWBIT_SHARED_DATA");
  return "LOWBIT_SHARED_DATA/" + sub +
         " not available (LOWBIT_SHARED_DATA=" + (shared && *shared ? std::string(shared) : std::string("<unset>")) +
         ")";
}

}  // namespace

TEST_CASE("real MNIST test set from the shared data folder") {
  const fs::path dir = shared_data("mnist");
  if (dir.empty() || !fs::exists(dir / "t10k-images-idx3-ubyte.gz")) LOWBIT_SKIP(missing("mnist"));
  const ImageDataset ds =
      read_idx((dir / "t10k-images-idx3-ubyte.gz").string(), (dir / "t10k-labels-idx1-ubyte.gz").string());
  CHECK(ds.images.shape() == Shape{10000, 28, 28, 1});
  CHECK(ds.label(0) == 7);
  std::vector<int64_t> counts(10, 0);
  for (int64_t i = 0; i < ds.size(); ++i) counts[size_t(ds.label(i))]++;
  for (int64_t c : counts) CHECK(c > 800);
}

TEST_CASE("real CIFAR-10 exact test prefix from the shared data folder") {
  const fs::path dir = shared_data("cifar-10");
  const fs::path file = dir / "test_batch.first1017.exact.bin.gz";
  if (dir.empty() || !fs::exists(file)) LOWBIT_SKIP(missing("cifar-10"));
  const ImageDataset ds = read_cifar10({file.string()});
  CHECK(ds.size() == 1017);
  CHECK(ds.label(0) == 3);  // the official test set starts with a cat
  CHECK(ds.class_names[3] == "cat");
}

TEST_CASE("Fashion-MNIST from the Debian package") {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))
    LOWBIT_SKIP("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)");
  const DataSplits s = load_dataset("fashion-mnist");
  CHECK(s.train.images.shape() == Shape{60000, 28, 28, 1});
  CHECK(s.test.images.shape() == Shape{10000, 28, 28, 1});
  CHECK(s.test.class_names[9] == "Ankle boot");
  std::vector<int64_t> counts(10, 0);
  for (int64_t i = 0; i < s.test.size(); ++i) counts[size_t(s.test.label(i))]++;
  for (int64_t c : counts) CHECK(c == 1000);  // Fashion-MNIST's test set is balanced
}
