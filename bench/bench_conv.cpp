// Convolution benchmarks: forward, backward-data and backward-weight for every layer of the zoo tables
// (bench/conv_layers.h) at batch 128, plus "resnet20_total" (fwd + bwd-data + bwd-weight over all
// ResNet-20 layers with multiplicity).
//
//   bench_conv [--threads N] [--batch N] [--list_layers] [--serve] [google-benchmark flags]
// Threads: --threads, else env LOWBIT_NUM_THREADS, else all hardware threads.
// --list_layers prints one JSON object per layer (used by bench/compare_pytorch.py) and exits.
// --serve is the timing mode of bench/compare_pytorch.py: it reads lines "<model>/<name> <pass> <reps>"
//   (pass: fwd, bwd_data, bwd_weight) from stdin and answers each with one line of <reps> wall times
//   in ms, one call each after a warm-up call; buffers stay allocated between requests. Ends at EOF.
// Counters: GFLOP/s (2 flops per MAC) and, when the peak probe exists, pct_peak.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_flags.h"
#include "conv_layers.h"
#include "core/kernels/conv.h"
#include "core/parallel.h"
#if __has_include("core/kernels/peak.h")
#include "core/kernels/peak.h"
#define LOWBIT_HAVE_PEAK 1
#endif

using namespace lowbit;
using kernels::Conv2dGeometry;

namespace {

double g_peak_gflops = 0.0;

std::vector<bench::ConvLayer> all_layers(int64_t batch) {
  std::vector<bench::ConvLayer> all;
  for (auto table : {bench::resnet20_conv_layers, bench::vgg11_conv_layers, bench::mobilenet_pointwise_layers,
                     bench::lenet5_conv_layers, bench::alexnet_conv_layers})
    for (const auto& l : table(batch)) all.push_back(l);
  return all;
}

std::vector<float> random_vec(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct Buffers {
  std::vector<float> x, w, b, y, dx, dw, db;
  explicit Buffers(const Conv2dGeometry& g)
      : x(random_vec(g.N * g.H * g.W * g.C, 1)),
        w(random_vec(g.K * g.R * g.S * g.C_per_group(), 2)),
        b(random_vec(g.K, 3)),
        y(random_vec(g.N * g.P() * g.Q() * g.K, 4)),
        dx(x.size()),
        dw(w.size()),
        db(g.K) {}
};

enum class Pass { kForward, kBackwardData, kBackwardWeight };

void run_pass(Pass pass, const Conv2dGeometry& g, Buffers& b) {
  switch (pass) {
    case Pass::kForward: kernels::conv2d_forward(g, b.x.data(), b.w.data(), b.b.data(), b.y.data()); break;
    case Pass::kBackwardData: kernels::conv2d_backward_data(g, b.y.data(), b.w.data(), b.dx.data()); break;
    case Pass::kBackwardWeight: kernels::conv2d_backward_weight(g, b.x.data(), b.y.data(), b.dw.data(), nullptr); break;
  }
}

void set_counters(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (g_peak_gflops > 0)
    state.counters["pct_peak"] = benchmark::Counter(flops_per_iter * 1e-9 * 100.0 / g_peak_gflops,
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

void bm_layer(benchmark::State& state, Pass pass, Conv2dGeometry g) {
  Buffers b(g);
  run_pass(pass, g, b);
  for (auto _ : state) {
    run_pass(pass, g, b);
    benchmark::ClobberMemory();
  }
  set_counters(state, 2.0 * static_cast<double>(g.macs()));
}

void bm_resnet20_total(benchmark::State& state, int64_t batch) {
  const auto layers = bench::resnet20_conv_layers(batch);
  std::vector<Buffers> bufs;
  double flops = 0;
  for (const auto& l : layers) {
    bufs.emplace_back(l.geom);
    flops += 3.0 * 2.0 * static_cast<double>(l.geom.macs()) * l.multiplicity;
  }
  for (auto _ : state) {
    for (size_t i = 0; i < layers.size(); ++i)
      for (int m = 0; m < layers[i].multiplicity; ++m)
        for (Pass p : {Pass::kForward, Pass::kBackwardData, Pass::kBackwardWeight})
          run_pass(p, layers[i].geom, bufs[i]);
    benchmark::ClobberMemory();
  }
  set_counters(state, flops);
}

void print_layers(int64_t batch) {
  for (const auto& l : all_layers(batch)) {
    const auto& g = l.geom;
    std::printf(
        "{\"model\": \"%s\", \"name\": \"%s\", \"N\": %ld, \"C\": %ld, \"H\": %ld, \"W\": %ld, \"K\": %ld, "
        "\"R\": %ld, \"S\": %ld, \"stride_h\": %ld, \"stride_w\": %ld, \"pad_h\": %ld, \"pad_w\": %ld, "
        "\"dil_h\": %ld, \"dil_w\": %ld, \"groups\": %ld, \"multiplicity\": %d, \"algorithm\": \"%s\"}\n",
        l.model, l.name, long(g.N), long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S), long(g.stride_h),
        long(g.stride_w), long(g.pad_h), long(g.pad_w), long(g.dil_h), long(g.dil_w), long(g.groups), l.multiplicity,
        kernels::conv2d_algorithm(g));
  }
}

// Timing server for bench/compare_pytorch.py (see the header comment).
int serve(int64_t batch) {
  std::map<std::string, bench::ConvLayer> by_name;
  for (const auto& l : all_layers(batch)) by_name.emplace(std::string(l.model) + "/" + l.name, l);
  std::map<std::string, std::unique_ptr<Buffers>> buffers;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string name, pass_name;
    int reps = 0;
    in >> name >> pass_name >> reps;
    const auto it = by_name.find(name);
    const Pass pass = pass_name == "fwd"        ? Pass::kForward
                      : pass_name == "bwd_data" ? Pass::kBackwardData
                                                : Pass::kBackwardWeight;
    if (it == by_name.end() || reps < 1 ||
        (pass_name != "fwd" && pass_name != "bwd_data" && pass_name != "bwd_weight")) {
      std::printf("error: bad request '%s'\n", line.c_str());
      std::fflush(stdout);
      continue;
    }
    auto& buf = buffers[name];
    if (!buf) buf = std::make_unique<Buffers>(it->second.geom);
    run_pass(pass, it->second.geom, *buf);  // warm-up
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      run_pass(pass, it->second.geom, *buf);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%s%.5f", r ? " " : "", ms);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 128;
  bool list = false, serve_mode = false;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* flag) { return bench::flag_value(argc, argv, i, flag); };
    if (const char* v = value("--threads")) {
      set_num_threads(std::atoi(v));
    } else if (const char* v2 = value("--batch")) {
      batch = std::atoll(v2);
    } else if (std::strcmp(argv[i], "--list_layers") == 0) {
      list = true;
    } else if (std::strcmp(argv[i], "--serve") == 0) {
      serve_mode = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (list) {
    print_layers(batch);
    return 0;
  }
  if (serve_mode) return serve(batch);
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
#ifdef LOWBIT_HAVE_PEAK
  g_peak_gflops = kernels::measure_peak_gflops(num_threads());
#endif
  benchmark::AddCustomContext("threads", std::to_string(num_threads()));
  benchmark::AddCustomContext("peak_gflops", std::to_string(g_peak_gflops));

  const struct {
    const char* tag;
    Pass pass;
  } passes[] = {{"fwd", Pass::kForward}, {"bwd_data", Pass::kBackwardData}, {"bwd_weight", Pass::kBackwardWeight}};
  for (const auto& l : all_layers(batch))
    for (const auto& p : passes) {
      const std::string name = std::string("conv_") + p.tag + "/" + l.model + "/" + l.name;
      benchmark::RegisterBenchmark(name.c_str(), bm_layer, p.pass, l.geom)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  benchmark::RegisterBenchmark("resnet20_total", bm_resnet20_total, batch)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
