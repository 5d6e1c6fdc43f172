// One training step (forward + cross-entropy + backward + SGD momentum 0.9, wd 1e-4) on random
// data, split into its phases for profiling: counters fwd_ms, bwd_ms, step_ms per iteration and
// items_per_second = images/s of the whole step. Same loop as `lowbit bench`.
//
//   bench_train_step [google-benchmark flags]      (threads: LOWBIT_NUM_THREADS, default all cores)
#include <benchmark/benchmark.h>

#include <chrono>

#include "autograd/ops.h"
#include "autograd/ops_nn.h"
#include "core/random.h"
#include "models/zoo.h"
#include "optim/sgd.h"

using namespace lowbit;

namespace {

void train_step(benchmark::State& state, const char* name, const char* variant, int64_t size) {
  const int64_t B = state.range(0);
  models::ModelOptions mo;
  mo.variant = variant;
  mo.image_size = size;
  mo.seed = 1;
  auto model = models::create_model(name, mo);
  const int64_t C = models::model_info(name).default_in_channels;
  Generator gen(1);
  const Tensor x = Tensor::randn({B, C, size, size}, gen).contiguous(MemoryFormat::channels_last);
  std::vector<int32_t> y(B);
  for (int64_t i = 0; i < B; ++i) y[i] = static_cast<int32_t>(i % 10);
  const Tensor labels = Tensor::from_vector(y, {B});
  std::vector<optim::ParamGroup> groups(1);
  groups[0].params = model->parameters();
  groups[0].lr = 0.01, groups[0].momentum = 0.9, groups[0].weight_decay = 1e-4;
  optim::SGD opt(std::move(groups));
  model->train();
  using clock = std::chrono::steady_clock;
  double fwd = 0, bwd = 0, step = 0;
  for (auto _ : state) {
    const auto t0 = clock::now();
    Variable loss = cross_entropy((*model)(Variable(x)), labels);
    const auto t1 = clock::now();
    opt.zero_grad();
    loss.backward();
    const auto t2 = clock::now();
    opt.step();
    const auto t3 = clock::now();
    fwd += std::chrono::duration<double, std::milli>(t1 - t0).count();
    bwd += std::chrono::duration<double, std::milli>(t2 - t1).count();
    step += std::chrono::duration<double, std::milli>(t3 - t2).count();
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["fwd_ms"] = fwd / n;
  state.counters["bwd_ms"] = bwd / n;
  state.counters["step_ms"] = step / n;
  state.SetItemsProcessed(state.iterations() * B);
}

void BM_resnet20(benchmark::State& s) { train_step(s, "resnet20", "B", 32); }
void BM_lenet5(benchmark::State& s) { train_step(s, "lenet5", "", 28); }
void BM_mobilenet_v1_cifar(benchmark::State& s) { train_step(s, "mobilenet_v1", "cifar", 32); }

}  // namespace

BENCHMARK(BM_resnet20)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3);
BENCHMARK(BM_lenet5)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2);
BENCHMARK(BM_mobilenet_v1_cifar)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5);

BENCHMARK_MAIN();
