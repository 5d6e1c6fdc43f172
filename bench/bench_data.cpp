// DataLoader throughput: images/s delivered on CIFAR-10 (data_batch_1, 10,000 images) with the
// standard augmentation "crop:32:4,flip,normalize:cifar10" at batch 128, for thread counts and
// prefetch depths. One iteration = one epoch consumed with begin_epoch/next.
//
//   bench_data [--data DIR] [google-benchmark flags]
// DIR is the CIFAR-10 folder (data_batch_1.bin[.gz]); default $LOWBIT_SHARED_DATA/cifar-10, else
// ../shared/data/cifar-10. Without it the bench runs on 10,000 random images of the same shape.
// Counter: items_per_second = images/s. Target: >= 5x the training rate (many thousands/s).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "core/random.h"
#include "data/dataset.h"
#include "data/io.h"
#include "data/loader.h"

using namespace lowbit;
using namespace lowbit::data;

namespace {

ImageDataset g_data;

ImageDataset load_cifar_or_synthetic(std::string dir) {
  if (dir.empty()) {
    const char* env = std::getenv("LOWBIT_SHARED_DATA");
    dir = env && *env ? std::string(env) + "/cifar-10" : "../shared/data/cifar-10";
  }
  const std::string file = find_raw_or_gz(dir + "/data_batch_1.bin");
  if (!file.empty()) {
    std::fprintf(stderr, "bench_data: %s\n", file.c_str());
    return read_cifar10({file});
  }
  std::fprintf(stderr, "bench_data: no CIFAR-10 in %s; using 10,000 random 32x32x3 images\n", dir.c_str());
  ImageDataset ds;
  const int64_t n = 10000;
  ds.images = Tensor::empty({n, 32, 32, 3}, DType::u8);
  Generator gen(1);
  uint8_t* p = ds.images.data<uint8_t>();
  for (int64_t i = 0; i < ds.images.numel(); ++i) p[i] = uint8_t(gen.uniform_at(uint64_t(i)) * 256);
  ds.labels = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) ds.labels.data<int32_t>()[i] = int32_t(i % 10);
  ds.num_classes = 10;
  ds.source = "synthetic";
  return ds;
}

// Args: threads, prefetch.
void bm_loader_epoch(benchmark::State& state) {
  set_num_threads(int(state.range(0)));
  LoaderOptions o;
  o.batch_size = 128;
  o.seed = 1;
  o.prefetch = state.range(1);
  o.transforms = parse_transforms("crop:32:4,flip,normalize:cifar10");
  DataLoader loader(g_data, o);
  int64_t epoch = 0, images = 0;
  for (auto _ : state) {
    loader.begin_epoch(epoch++);
    Batch b;
    while (loader.next(b)) {
      images += b.images.size(0);
      benchmark::DoNotOptimize(b.images.data_ptr());
    }
  }
  state.SetItemsProcessed(images);
  state.counters["batches/s"] =
      benchmark::Counter(double(loader.num_batches()), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--data=", 7) == 0)
      dir = argv[i] + 7;
    else if (std::strcmp(argv[i], "--data") == 0 && i + 1 < argc)
      dir = argv[++i];
    else
      rest.push_back(argv[i]);
  }
  int rest_argc = int(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  g_data = load_cifar_or_synthetic(dir);
  benchmark::RegisterBenchmark("cifar10_crop_flip_normalize_b128", bm_loader_epoch)
      ->ArgNames({"threads", "prefetch"})
      ->ArgsProduct({{1, 2}, {0, 2}})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
