// libFuzzer harness of the integer model file (.lbq, docs/format.md): deploy/model_file.h
// parse_model, the code load_model runs on the file's contents, and the integer engine
// (deploy/engine.h) on what it accepts.
//
// Input: a whole model file when it starts with the magic "LOWBITQM"; otherwise the payload
// (metadata and op records), which the harness wraps in a valid 32-byte header (version 4, the
// newest: its conv/linear bodies carry out_signed and the weight storage, packed, Huffman-coded or
// zero run-length + Huffman-coded; flags 0, size, CRC-32), so the fuzzer reaches the record parser
// (and the decoders of deploy/entropy.cpp) instead of stopping at the checksum.
//
// Checked beyond "no crash, no sanitizer report": a model that parses
//   - serializes at the file's version, the bytes (as many as the file's: the reader skips nothing,
//     unless a layer is Huffman-coded: the file's code lengths, and its runs, need not be the ones
//     our encoder picks) parse again to the same weights and serialize to the same bytes
//     (serialize_model(parse_model(x)) is a fixed point);
//   - keeps every activation the engine would allocate within the format's 2^31 elements per image
//     (each op's output, a padded conv's copy of its input);
//   - when small (weights, every op's output, padded input and work, and the total MACs all
//     <= kMaxWork), runs on the engine (one thread): an all-zero and a patterned image as a batch of
//     2 through Path::fast and Path::reference, and the patterned one alone through Path::fast. The
//     logits must agree bit for bit between the paths and between the batch and the single image.
//     The engine may refuse a model with a lowbit::Error (e.g. requantization constants out of
//     range), but then every run the same way.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "deploy/engine.h"
#include "deploy/model_file.h"

using namespace lowbit::deploy;

namespace {

// 2.5e5 rather than 1e6: at 1e6 the fuzzer drifted to models of ~1e6 MACs (100 ms per input under
// the sanitizers), a tenth of the executions.
constexpr double kMaxWork = 2.5e5;

// The engine's work on the model for one image, bounded per op and in total (doubles: the shapes are
// validated, but products of them may exceed int64).
bool small(const Model& m, const std::vector<ActShape>& shapes) {
  double total_weights = 0, total_macs = 0;
  for (size_t i = 1; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    const ActShape& in = shapes[size_t(source_of(m, i))];
    const ActShape& out = shapes[i];
    const double out_elems = double(out.H) * double(out.W) * double(out.C);
    const double in_elems = double(in.H) * double(in.W) * double(in.C);
    double work = std::max(out_elems, in_elems);
    if (op.kind == OpKind::conv || op.kind == OpKind::linear) {
      const WeightOp& l = op.layer;
      const double macs = out_elems * double(l.R) * double(l.S) * double(l.C / l.groups);
      total_weights += double(l.numel());
      total_macs += macs;
      work = std::max({work, 2 * macs, 2 * out_elems,  // wide layers: two halves
                       double(in.H + 2 * l.pad_h) * double(in.W + 2 * l.pad_w) * double(in.C + 3)});  // padded copy
    } else if (op.kind == OpKind::max_pool) {
      work = std::max(work, out_elems * double(op.pool.R) * double(op.pool.S));
    }
    if (work > kMaxWork) return false;
  }
  return total_weights <= kMaxWork && total_macs <= kMaxWork;
}

// The format's limit on one activation (2^31 elements per image) also bounds what the engine
// allocates from it: every op's output and a padded conv's copy of its input (the fast kernels pad a
// copy; a file of a few hundred bytes must not make the engine allocate terabytes).
bool within_limits(const Model& m, const std::vector<ActShape>& shapes) {
  constexpr double kMaxElements = 0x1p31;
  for (size_t i = 1; i < m.ops.size(); ++i) {
    const ActShape& in = shapes[size_t(source_of(m, i))];
    const ActShape& out = shapes[i];
    if (double(out.H) * double(out.W) * double(out.C) > kMaxElements) return false;
    const Op& op = m.ops[i];
    if (op.kind == OpKind::conv &&
        double(in.H + 2 * op.layer.pad_h) * double(in.W + 2 * op.layer.pad_w) * double(in.C) > kMaxElements)
      return false;
  }
  return true;
}

// Runs `n` images through one path; false when the engine refused them (a lowbit::Error).
bool run(Engine& e, const std::vector<uint8_t>& images, int64_t n, Engine::Path path, std::vector<float>& logits) {
  logits.assign(size_t(n * e.classes()), -1.0f);
  try {
    e.run(images.data(), n, logits.data(), path);
    return true;
  } catch (const lowbit::Error&) {
    return false;
  }
}

void check_engine(const Model& m, const uint8_t* data, size_t size) {
  std::unique_ptr<Engine> engine;
  try {
    engine = std::make_unique<Engine>(m, "fuzz.lbq");
  } catch (const lowbit::Error&) {
    return;
  }
  Engine& e = *engine;
  const size_t image = size_t(e.channels() * e.height() * e.width());
  std::vector<uint8_t> batch(2 * image, 0);  // image 0 all zero, image 1 patterned (seeded by the input)
  uint32_t h = uint32_t(crc32(0L, data, uInt(size)));
  for (size_t j = image; j < 2 * image; ++j) {
    h = h * 1664525u + 1013904223u;
    batch[j] = (j & 1) ? uint8_t(h >> 24) : uint8_t(j * 37);
  }
  const std::vector<uint8_t> single(batch.begin() + std::ptrdiff_t(image), batch.end());
  const size_t classes = size_t(e.classes());
  std::vector<float> fast2, ref2, fast1;
  const bool ok_fast2 = run(e, batch, 2, Engine::Path::fast, fast2);
  const bool ok_ref2 = run(e, batch, 2, Engine::Path::reference, ref2);
  const bool ok_fast1 = run(e, single, 1, Engine::Path::fast, fast1);
  if (ok_fast2 != ok_ref2 || ok_fast2 != ok_fast1) __builtin_trap();  // one run refused, another did not
  if (!ok_fast2) return;
  if (std::memcmp(fast2.data(), ref2.data(), fast2.size() * sizeof(float)) != 0) __builtin_trap();
  if (std::memcmp(fast1.data(), fast2.data() + classes, classes * sizeof(float)) != 0)
    __builtin_trap();  // image 1 alone differs from image 1 in the batch
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One core per fuzzer, unless LOWBIT_NUM_THREADS says otherwise (fast == reference must hold for any
  // thread count: e.g. LOWBIT_NUM_THREADS=2 fuzz_model -runs=0 CORPUS replays a corpus on 2 threads).
  if (!std::getenv("LOWBIT_NUM_THREADS")) lowbit::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string file;
  if (size >= 8 && std::memcmp(data, kModelMagic, 8) == 0) {
    file.assign(reinterpret_cast<const char*>(data), size);
  } else {
    auto put = [&file](const auto& v) { file.append(reinterpret_cast<const char*>(&v), sizeof v); };
    file.assign(kModelMagic, 8);
    put(kModelVersion);
    put(uint32_t{0});
    put(uint64_t{size});
    put(uint32_t(crc32(crc32(0L, Z_NULL, 0), data, uInt(size))));
    put(uint32_t{0});
    file.append(reinterpret_cast<const char*>(data), size);
  }
  Model m;
  try {
    m = parse_model(file, "fuzz.lbq");
  } catch (const lowbit::Error&) {
    return 0;
  }
  // Round trip: what parses serializes (validate passed), to as many bytes, and is a fixed point.
  std::string again;
  std::vector<ActShape> shapes;
  try {
    uint32_t version = 0;  // the file's (parse_model accepted it)
    std::memcpy(&version, file.data() + 8, 4);
    again = serialize_model(m, version);
    shapes = validate(m, "fuzz.lbq");
    bool coded = false;
    for (const Op& op : m.ops) coded |= op.layer.storage != WeightStorage::packed;
    const Model back = parse_model(again, "again.lbq");
    if ((!coded && again.size() != file.size()) || serialize_model(back, version) != again) __builtin_trap();
    for (size_t i = 0; i < m.ops.size(); ++i)
      if (back.ops[i].layer.weights != m.ops[i].layer.weights) __builtin_trap();
  } catch (const lowbit::Error&) {
    __builtin_trap();
  }
  if (!within_limits(m, shapes)) __builtin_trap();
  if (small(m, shapes)) check_engine(m, data, size);
  return 0;
}
