// Machine-peak probe: measured fp32 FMA throughput of this CPU.
//
//   measure_peak_gflops(threads)  runs independent FMA chains (enough accumulators to cover the
//                                 FMA latency) on `threads` std::threads at once and returns the
//                                 aggregate GFLOP/s (1 FMA lane = 2 flops). Uses 512-bit FMAs when
//                                 the CPU has AVX-512F at run time, else 256-bit FMA, else scalar.
//                                 Takes ~0.2 s per call; the best of a few repetitions is returned.
//   peak_isa()                    names the vector width the probe used ("avx512", "avx2", "scalar").
//   measure_clock_ghz()           core clock while running the probe's FMAs, from a chain of
//                                 dependent integer adds (1 cycle each) interleaved with FMAs on one
//                                 thread; peak / (clock * threads * 2 * lanes) = FMAs per cycle per core
//                                 (2 on cores with two 512-bit FMA ports).
//   measure_peak_int8_gops(threads) the same for AVX-512 VNNI: independent vpdpbusd chains (one
//                                 instruction = 16 lanes x 4 u8 x s8 products = 64 MACs = 128 ops);
//                                 aggregate GOP/s, 0 when the CPU lacks AVX-512 VNNI.
#pragma once

namespace lowbit::kernels {

double measure_peak_gflops(int threads);
const char* peak_isa();
double measure_clock_ghz();
double measure_peak_int8_gops(int threads);

}  // namespace lowbit::kernels
