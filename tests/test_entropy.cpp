// The entropy-coded model file (spec methods.md §3.4): canonical Huffman coding of a layer's weight
// fields (deploy/entropy.h), the .lbq version 4 that stores layers with it (deploy/model_file.h), and
// `lowbit export --entropy-code`'s account (deploy/export.h entropy_code).
#include <doctest/doctest.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "deploy/engine.h"
#include "deploy/entropy.h"
#include "deploy/export.h"
#include "deploy/model_file.h"
#include "deploy_fixtures.h"
#include "test_util.h"

using namespace lowbit;
using namespace lowbit::deploy;
using namespace lowbit::testing;

namespace {

std::vector<uint64_t> freq_of(const std::vector<uint32_t>& u, int bits) {
  std::vector<uint64_t> f(size_t(1) << bits, 0);
  for (uint32_t x : u) ++f[x];
  return f;
}

// Kraft sum of the used lengths, times 2^24.
uint64_t kraft(const std::vector<uint8_t>& len) {
  uint64_t k = 0;
  for (uint8_t l : len)
    if (l) k += uint64_t(1) << (24 - l);
  return k;
}

// Canonical code properties: prefix-free; lengths <= max; a code of one length per symbol order.
// Pairwise over the first 300 used symbols (all of them in small alphabets).
void check_canonical(const std::vector<uint8_t>& len, int max_len) {
  const std::vector<uint32_t> code = canonical_codes(len);
  std::vector<size_t> used;
  for (size_t s = 0; s < len.size() && used.size() < 300; ++s)
    if (len[s]) used.push_back(s);
  for (size_t a : used) {
    CHECK(len[a] <= max_len);
    for (size_t b : used) {
      if (a == b || len[a] > len[b]) continue;
      // a's code is not a prefix of b's (len[a] <= len[b]).
      CHECK((code[b] >> (len[b] - len[a])) != code[a]);
      if (len[a] == len[b] && a < b) CHECK(code[a] < code[b]);  // canonical: symbol order within a length
      if (len[a] < len[b]) CHECK((uint64_t(code[a]) << (len[b] - len[a])) < code[b]);  // shorter codes first
    }
  }
}

std::vector<uint32_t> round_trip(const std::vector<uint32_t>& u, int bits) {
  const std::string body = huffman_encode(u, bits);
  CHECK(int64_t(body.size()) == huffman_size(u, bits).body_bytes);
  return huffman_decode(body, int64_t(u.size()), bits, "test");
}

}  // namespace

TEST_CASE("Huffman: a textbook example gets the optimal code lengths") {
  // CLRS 16.3: frequencies 45 13 12 16 9 5 -> cost 224 (lengths 1 3 3 3 4 4).
  const std::vector<uint64_t> f = {45, 13, 12, 16, 9, 5, 0, 0};
  const std::vector<uint8_t> len = huffman_lengths(f);
  CHECK(len == std::vector<uint8_t>{1, 3, 3, 3, 4, 4, 0, 0});
  uint64_t cost = 0;
  for (size_t s = 0; s < f.size(); ++s) cost += f[s] * len[s];
  CHECK(cost == 224);
  check_canonical(len, 24);
  // Canonical (DEFLATE's rule): 0 -> "0"; length 3: 1 100, 2 101, 3 110; length 4: 4 1110, 5 1111.
  CHECK(canonical_codes(len) == std::vector<uint32_t>{0, 4, 5, 6, 14, 15, 0, 0});
}

TEST_CASE("Huffman round trip: one symbol, all distinct, skewed, uniform random, every width") {
  Generator gen(18);
  // One symbol only: 1 bit a field (the code "0").
  for (uint32_t s : {0u, 5u, 7u}) {
    const std::vector<uint32_t> u(1000, s);
    CHECK(round_trip(u, 3) == u);
    CHECK(huffman_size(u, 3).stream_bits == 1000);
    CHECK(huffman_size(u, 3).symbols == 1);
  }
  CHECK(round_trip({9}, 4) == std::vector<uint32_t>{9});
  // All distinct: every 12-bit field once, shuffled -> 12 bits each.
  std::vector<uint32_t> all(4096);
  for (uint32_t i = 0; i < 4096; ++i) all[i] = i;
  for (size_t i = all.size(); i-- > 1;) std::swap(all[i], all[size_t(gen.next_u64() % (i + 1))]);
  CHECK(round_trip(all, 12) == all);
  CHECK(huffman_size(all, 12).stream_bits == 4096 * 12);
  // Two symbols: 1 bit each.
  CHECK(huffman_size({0, 3, 3, 0, 3}, 2).stream_bits == 5);
  // Skewed (mostly zero, as after pruning) and uniform, for bits 1..16.
  for (int bits = 1; bits <= 16; ++bits)
    for (int skew : {0, 1}) {
      std::vector<uint32_t> u(3001);
      for (auto& x : u) {
        const uint64_t r = gen.next_u64();
        x = skew && r % 10 < 8 ? 0u : uint32_t((r >> 8) % (uint64_t(1) << bits));
      }
      const std::vector<uint32_t> back = round_trip(u, bits);
      CHECK(back == u);
      const HuffmanSize s = huffman_size(u, bits);
      if (skew && bits >= 4) CHECK(s.stream_bits < int64_t(u.size()) * bits / 2);  // the zeros take ~1 bit
      check_canonical(huffman_lengths(freq_of(u, bits)), 24);
      CHECK(kraft(huffman_lengths(freq_of(u, bits))) == (uint64_t(1) << 24) - (s.symbols == 1 ? 1u << 23 : 0));
    }
}

TEST_CASE("Huffman: the length limit (Fibonacci frequencies) keeps a complete code within 24 bits") {
  // Fibonacci frequencies make Huffman's tree a path: 40 symbols -> depth 39 unlimited.
  std::vector<uint64_t> f(64, 0);
  uint64_t a = 1, b = 1;
  for (size_t s = 0; s < 40; ++s) f[s] = a, std::tie(a, b) = std::make_pair(b, a + b);
  for (int max_len : {24, 10, 6}) {
    const std::vector<uint8_t> len = huffman_lengths(f, max_len);
    CHECK(*std::max_element(len.begin(), len.end()) == max_len);
    CHECK(kraft(len) == (uint64_t(1) << 24));
    check_canonical(len, max_len);
    for (size_t s = 0; s + 1 < 40; ++s) CHECK(len[s] >= len[s + 1]);  // more frequent: not longer
  }
  CHECK_THROWS_AS(huffman_lengths(f, 5), Error);            // 40 symbols do not fit 5 bits
  CHECK(huffman_lengths(f, 24) == huffman_lengths(f, 24));  // deterministic
  // A stream with those frequencies (scaled down: 2^20 fields) through encode/decode at 6 bits a field.
  std::vector<uint32_t> u;
  a = 1, b = 1;
  for (uint32_t s = 0; s < 28; ++s) {
    u.insert(u.end(), size_t(a), s);
    std::tie(a, b) = std::make_pair(b, a + b);
  }
  const std::vector<uint8_t> len = huffman_lengths(freq_of(u, 6));
  CHECK(*std::max_element(len.begin(), len.end()) == 24);  // 27 unlimited
  CHECK(round_trip(u, 6) == u);
}

TEST_CASE("Huffman decoding: a corrupt or truncated body is refused with an error naming the defect") {
  Generator gen(7);
  std::vector<uint32_t> u(500);
  for (auto& x : u) x = gen.next_u64() % 4 == 0 ? uint32_t(gen.next_u64() % 16) : 0u;
  const std::string body = huffman_encode(u, 4);
  auto err = [&](const std::string& b, int64_t count = 500) {
    return error_of([&] { huffman_decode(b, count, 4, "f.lbq: op 1"); });
  };
  for (size_t n = 0; n < body.size(); ++n) CHECK(err(body.substr(0, n)).find("f.lbq: op 1: huffman weights") == 0);
  CHECK(err(body.substr(0, 3)).find("truncated") != std::string::npos);
  CHECK(err(body + '\0').find("trailing bytes") != std::string::npos);
  CHECK(err(body, 520).find("truncated: the stream") != std::string::npos);  // > 7 padding bits more
  std::string b = body;
  b[0] = 0;  // table size 0
  CHECK(err(b).find("table size 0 is outside [1, 16]") != std::string::npos);
  b = body, b[0] = 17;
  CHECK(err(b).find("table size 17") != std::string::npos);
  b = body, std::swap(b[4], b[7]);  // the first two symbols swapped: not increasing
  CHECK(err(b).find("must increase") != std::string::npos);
  b = body, b[6] = 25;
  CHECK(err(b).find("code length 25 is outside [1, 24]") != std::string::npos);
  b = body, b[6] = char(b[6] + 1);  // one code longer: the code is incomplete
  CHECK(err(b).find("complete prefix code") != std::string::npos);
  b = body, b[4] = 16;  // symbol 16 at 4 bits
  CHECK(err(b).find("does not fit 4 bits") != std::string::npos);
  // Padding bits: set the last byte's lowest bit when the stream does not end on a byte.
  const HuffmanSize s = huffman_size(u, 4);
  REQUIRE(s.stream_bits % 8 != 0);
  b = body, b.back() = char(uint8_t(b.back()) | 1);
  CHECK(err(b).find("unused low bits") != std::string::npos);
  // One-symbol table: length must be 1; a '1' bit matches no code.
  const std::string one = huffman_encode({3, 3, 3}, 2);
  CHECK(huffman_decode(one, 3, 2, "x") == std::vector<uint32_t>{3, 3, 3});
  std::string o = one;
  o[6] = 0;
  CHECK(error_of([&] { huffman_decode(o, 3, 2, "x"); }).find("must be 1 for the only symbol") != std::string::npos);
  o = one, o[7] = char(0x20);
  CHECK(error_of([&] { huffman_decode(o, 3, 2, "x"); }).find("no code of up to 1 bits") != std::string::npos);
  // A huge declared count with a short stream is refused before allocating.
  CHECK(err(body, int64_t(1) << 31).find("truncated") != std::string::npos);
  // Every single-byte change: an error or a decode, never a crash (the fuzzer does the rest).
  for (size_t i = 0; i < body.size(); ++i)
    for (int x : {0x01, 0x80, 0xff}) {
      b = body, b[i] = char(uint8_t(b[i]) ^ x);
      size_t decoded = 500;
      try {
        decoded = huffman_decode(b, 500, 4, "x").size();
      } catch (const Error&) {
      }
      CHECK(decoded == 500);
    }
}

TEST_CASE(".lbq version 4: Huffman-coded weights decode bit-identical; the engine's logits are identical") {
  const std::pair<const char*, Model> models[] = {
      {"chain", fixtures::chain_model()}, {"graph", fixtures::graph_model()}, {"signed", fixtures::signed_model()}};
  for (const auto& [name, plain] : models) {
    CAPTURE(name);
    Model coded = plain;
    for (Op& op : coded.ops)
      if (op.kind == OpKind::conv || op.kind == OpKind::linear) op.layer.storage = WeightStorage::huffman;
    const std::string a = serialize_model(plain), b = serialize_model(coded);
    uint32_t va = 0, vb = 0;
    std::memcpy(&va, a.data() + 8, 4), std::memcpy(&vb, b.data() + 8, 4);
    CHECK(va <= 3);  // uncoded: the older version
    CHECK(vb == 4);
    CHECK_THROWS_AS(serialize_model(coded, 3), Error);
    const Model ra = parse_model(a, "a.lbq"), rb = parse_model(b, "b.lbq");
    REQUIRE(ra.ops.size() == rb.ops.size());
    int coded_layers = 0;
    for (size_t i = 0; i < ra.ops.size(); ++i) {
      CHECK(ra.ops[i].layer.weights == rb.ops[i].layer.weights);
      CHECK(rb.ops[i].layer.weights == plain.ops[i].layer.weights);
      CHECK(ra.ops[i].layer.storage == WeightStorage::packed);
      if (rb.ops[i].kind == OpKind::conv || rb.ops[i].kind == OpKind::linear) {
        CHECK(rb.ops[i].layer.storage == WeightStorage::huffman);
        ++coded_layers;
      }
    }
    CHECK(coded_layers >= 2);
    CHECK(serialize_model(rb) == b);  // a fixed point
    // Every layer packed at version 4 (storage byte 0) reads too.
    const std::string a4 = serialize_model(plain, 4);
    CHECK(parse_model(a4, "a4.lbq").ops[1].layer.weights == ra.ops[1].layer.weights);
    // The engine: identical logits.
    Engine ea(ra, "a"), eb(rb, "b");
    const int64_t n = 3, image = ea.channels() * ea.height() * ea.width();
    std::vector<uint8_t> px(size_t(n * image));
    for (size_t j = 0; j < px.size(); ++j) px[j] = uint8_t(j * 37 + 11);
    std::vector<float> la(size_t(n * ea.classes())), lb(la.size());
    ea.run(px.data(), n, la.data());
    eb.run(px.data(), n, lb.data());
    CHECK(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)) == 0);
    // Truncated coded files: an error naming the file, never a crash.
    for (size_t cut = 32; cut < b.size(); cut += 7)
      CHECK(error_of([&] { parse_model(b.substr(0, cut), "cut.lbq"); }).find("cut.lbq: truncated") == 0);
  }
}

TEST_CASE(".lbq version 4: a corrupt Huffman body behind a valid checksum names the layer and the defect") {
  Model m = fixtures::chain_model();
  for (Op& op : m.ops)
    if (op.kind == OpKind::conv || op.kind == OpKind::linear) op.layer.storage = WeightStorage::huffman;
  const std::string good = serialize_model(m);
  // Find the first coded body: its storage byte 1 followed by the u64 size, then the table.
  const Op& conv = m.ops[1];
  REQUIRE(conv.kind == OpKind::conv);
  const std::string coded = huffman_encode(weight_fields(conv.layer), conv.layer.bits);
  const size_t at = good.find(coded);
  REQUIRE(at != std::string::npos);
  REQUIRE(good[at - 9] == 1);  // the storage byte
  auto with_edit = [&](size_t pos, char v) {
    std::string payload = good.substr(32);
    payload[pos - 32] = v;
    std::string file = good.substr(0, 32);
    const uint32_t crc =
        uint32_t(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(payload.data()), uInt(payload.size())));
    std::memcpy(&file[24], &crc, 4);
    return file + payload;
  };
  const std::string e1 = error_of([&] { parse_model(with_edit(at, 0), "m.lbq"); });
  CHECK_MESSAGE(e1.find("m.lbq: op 1 (conv) 'c': huffman weights: table size 0") == 0, e1);
  const std::string e2 = error_of([&] { parse_model(with_edit(at - 9, 3), "m.lbq"); });
  CHECK(e2.find("unknown weight storage 3 (0 packed, 1 huffman, 2 huffman-rle)") != std::string::npos);
  // Storage 2 on this odd-coded layer (no zero weight): refused, naming the layer.
  const std::string e3 = error_of([&] { parse_model(with_edit(at - 9, 2), "m.lbq"); });
  CHECK_MESSAGE(e3.find("m.lbq: op 1 (conv) 'c': huffman-rle weights need a coding with a zero weight") == 0, e3);
}

TEST_CASE("entropy_code: per-layer storage (the smallest of three), sparsity and the spec formula's terms") {
  Model m = fixtures::graph_model();
  // A pruned-like layer: mostly zero weights (two's complement, 4 bits) codes far below 4 bits each.
  WeightOp* sparse = nullptr;
  for (Op& op : m.ops)
    if ((op.kind == OpKind::conv || op.kind == OpKind::linear) && op.layer.numel() >= 64 &&
        op.layer.coding == WeightCoding::twos_complement && op.layer.bits >= 4 &&
        (!sparse || op.layer.numel() > sparse->numel()))
      sparse = &op.layer;  // the largest: the run-length table's 5-byte entries pay off
  REQUIRE(sparse != nullptr);
  for (size_t j = 0; j < sparse->weights.size(); ++j) sparse->weights[j] = int16_t(j % 32 == 0 ? 1 : 0);
  sparse->name += ".low";  // counted as a low-order pass: out of N, in the denominator
  MESSAGE("sparse layer: ", sparse->numel(), " weights");
  const EntropyAccount a = entropy_code(m);
  int64_t n = 0, denominator = 0;
  size_t k = 0;
  std::vector<WeightStorage> chosen;
  for (const Op& op : m.ops) {
    if (op.kind != OpKind::conv && op.kind != OpKind::linear) continue;
    REQUIRE(k < a.layers.size());
    const CodedLayer& c = a.layers[k++];
    const std::vector<uint32_t> u = weight_fields(op.layer);
    const HuffmanSize h = huffman_size(u, op.layer.bits);
    const int64_t packed = (op.layer.numel() * op.layer.bits + 7) / 8;
    const bool has_zero = op.layer.coding == WeightCoding::twos_complement;
    const HuffmanSize r = has_zero ? rle_size(u, op.layer.bits, 0) : HuffmanSize{};
    CHECK(c.name == op.layer.name);
    CHECK(c.huffman_bytes == h.body_bytes);
    CHECK(c.packed_bytes == packed);
    CHECK(c.rle_bytes == (has_zero ? r.body_bytes : -1));
    CHECK(c.zeros == std::count(op.layer.weights.begin(), op.layer.weights.end(), int16_t(0)));
    // The smallest body; ties: packed, then huffman.
    int64_t best = packed, bits = op.layer.numel() * op.layer.bits;
    WeightStorage expect = WeightStorage::packed;
    if (h.body_bytes < best)
      best = h.body_bytes, bits = h.stream_bits + 32 + 24 * h.symbols, expect = WeightStorage::huffman;
    if (has_zero && r.body_bytes < best)
      best = r.body_bytes, bits = r.stream_bits + 32 + 40 * r.symbols, expect = WeightStorage::huffman_rle;
    CHECK(op.layer.storage == expect);
    CHECK(c.storage == expect);
    CHECK(c.stored_bytes() == best);
    chosen.push_back(expect);
    if (&op.layer == sparse) {
      CHECK(c.low_pass);
      CHECK(c.zeros == sparse->numel() - (sparse->numel() + 31) / 32);
      CHECK(op.layer.storage == WeightStorage::huffman_rle);  // 1 then a run of 31: 6 bits per 32 weights
      CHECK(c.stored_bits_per_weight() < 0.25);
    } else {
      n += op.layer.numel();
    }
    denominator += bits + 32;
  }
  CHECK(k == a.layers.size());
  CHECK(std::count(chosen.begin(), chosen.end(), WeightStorage::packed) +
            std::count(chosen.begin(), chosen.end(), WeightStorage::huffman) >=
        1);  // the random layers are not all run-length coded
  CHECK(a.formula_weights == n);
  CHECK(a.formula_bits == denominator);
  CHECK(a.formula_ratio() == doctest::Approx(32.0 * double(n) / double(denominator)));
  // The model as coded still reads back to the same weights, and the storage chosen.
  const Model r = parse_model(serialize_model(m), "m.lbq");
  for (size_t i = 0; i < m.ops.size(); ++i) {
    CHECK(r.ops[i].layer.weights == m.ops[i].layer.weights);
    CHECK(r.ops[i].layer.storage == m.ops[i].layer.storage);
  }
}

// ---- zero run-length + Huffman (storage 2, docs/format.md "Run-length Huffman-coded weights") ----
namespace {

std::vector<uint32_t> rle_round_trip(const std::vector<uint32_t>& u, int bits, uint32_t zero) {
  const std::string body = rle_encode(u, bits, zero);
  const HuffmanSize s = rle_size(u, bits, zero);
  CHECK(int64_t(body.size()) == s.body_bytes);  // the size helper = the encoder's byte count
  CHECK(s.body_bytes == 4 + 5 * s.symbols + (s.stream_bits + 7) / 8);
  CHECK(s.table_bits() == 32 + 40 * s.symbols);
  uint32_t n = 0;
  std::memcpy(&n, body.data(), 4);
  CHECK(n == s.symbols);
  return rle_decode(body, int64_t(u.size()), bits, zero, "test");
}

// count fields of `bits` bits, each zero with probability `sparsity`, else a random nonzero field.
std::vector<uint32_t> sparse_fields(int64_t count, int bits, double sparsity, uint32_t zero, Generator& gen) {
  std::vector<uint32_t> u(static_cast<size_t>(count), zero);
  const uint32_t values = uint32_t(1) << bits;
  for (auto& x : u)
    if (gen.uniform() >= sparsity)
      while ((x = uint32_t(gen.next_u64() % values)) == zero) {
      }
  return u;
}

}  // namespace

TEST_CASE("huffman-rle: a hand-computed body, byte for byte") {
  // 2-bit fields, zero field 0: 0 0 0 | 1 | 0 | 3 3 | 0 0 0 0 0 -> symbols RUN_1 (+1 extra bit: 3 = 2 + 1),
  // 1, RUN_0, 3, 3, RUN_2 (+2 bits: 5 = 4 + 1); RUN_j = 4 + j. Counts: 3 twice, the others once.
  // Huffman (ties by leaf order 1, 3, 4, 5, 6): depths 3, 2, 3, 2, 2 -> lengths handed out by frequency:
  // 3 -> 2, 1 -> 2, 4 -> 2, 5 -> 3, 6 -> 3. Canonical: 1 = 00, 3 = 01, 4 = 10, 5 = 110, 6 = 111.
  // Stream: 110 1 | 00 | 10 | 01 | 01 | 111 01 = 11010010 01011110 1(0000000).
  const std::vector<uint32_t> u = {0, 0, 0, 1, 0, 3, 3, 0, 0, 0, 0, 0};
  const std::string expect = std::string("\x05\x00\x00\x00", 4) +      // 5 symbols
                             std::string("\x01\x00\x00\x00\x02", 5) +  // field 1, length 2
                             std::string("\x03\x00\x00\x00\x02", 5) +  // field 3, length 2
                             std::string("\x04\x00\x00\x00\x02", 5) +  // RUN_0, length 2
                             std::string("\x05\x00\x00\x00\x03", 5) +  // RUN_1, length 3
                             std::string("\x06\x00\x00\x00\x03", 5) +  // RUN_2, length 3
                             std::string("\xd2\x5e\x80", 3);           // 17 stream bits
  CHECK(rle_encode(u, 2, 0) == expect);
  CHECK(rle_size(u, 2, 0).stream_bits == 17);
  CHECK(rle_decode(expect, 12, 2, 0, "x") == u);
  // All zero: one symbol (RUN_9 for 1000 fields: 512 + 488), the code "0" and 9 extra bits.
  const std::vector<uint32_t> z(1000, 0);
  const std::string all = rle_encode(z, 4, 0);
  const int64_t extra = 1000 - 512;  // 0b111101000
  CHECK(all == std::string("\x01\x00\x00\x00", 4) + std::string("\x19\x00\x00\x00\x01", 5) + char(uint8_t(extra >> 2)) +
                   char(uint8_t((extra & 3) << 6)));
  CHECK(rle_decode(all, 1000, 4, 0, "x") == z);
}

TEST_CASE("huffman-rle round trip: sparsity 0 to 1, long runs, runs at the end, bits 1..8 and 16") {
  Generator gen(31);
  for (int bits : {1, 2, 3, 4, 5, 6, 7, 8, 16})
    for (double sparsity : {0.0, 0.5, 0.9, 0.99, 1.0})
      for (int64_t count : {int64_t(1), int64_t(7), int64_t(3001)}) {
        CAPTURE(bits);
        CAPTURE(sparsity);
        CAPTURE(count);
        const uint32_t zero = bits == 1 ? 0 : uint32_t(gen.next_u64() % (uint64_t(1) << bits));  // any field
        const std::vector<uint32_t> u = sparse_fields(count, bits, sparsity, zero, gen);
        CHECK(rle_round_trip(u, bits, zero) == u);
        if (sparsity == 1.0) CHECK(rle_size(u, bits, zero).symbols == 1);
        if (sparsity >= 0.99 && count == 3001 && bits >= 2)  // below 1 bit a weight, which Huffman cannot do
          CHECK(rle_size(u, bits, zero).stream_bits < count / 2);
      }
  // Runs longer than 2^16 (and 2^20), at the start, in the middle and at the end; a single nonzero.
  for (const int64_t n : {int64_t(65537), int64_t(3) << 20}) {
    std::vector<uint32_t> u(size_t(n + 9), 0);
    u[0] = 5;
    u[size_t(n / 2)] = 2;
    CHECK(rle_round_trip(u, 4, 0) == u);
    std::vector<uint32_t> one(size_t(n), 0);
    one[size_t(n) - 1] = 9;  // one nonzero, last: a run of n - 1 first
    CHECK(rle_round_trip(one, 4, 0) == one);
    one[size_t(n) - 1] = 0, one[0] = 9;  // first: the run at the end
    CHECK(rle_round_trip(one, 4, 0) == one);
    CHECK(rle_size(one, 4, 0).stream_bits <= 2 + 22);  // two symbols of 1 bit, <= 22 extra bits
  }
  // Alternating zero / nonzero (runs of 1) and dense runs of every length 1..40.
  std::vector<uint32_t> alt(2001);
  for (size_t i = 0; i < alt.size(); ++i) alt[i] = i % 2 ? 0u : 1u + uint32_t(i % 7);
  CHECK(rle_round_trip(alt, 3, 0) == alt);
  std::vector<uint32_t> runs;
  for (uint32_t len = 1; len <= 40; ++len) runs.insert(runs.end(), len, 0), runs.push_back(len % 15 + 1);
  CHECK(rle_round_trip(runs, 4, 0) == runs);
  CHECK_THROWS_AS(rle_encode({4}, 2, 0), Error);  // a field beyond 2 bits
  CHECK_THROWS_AS(rle_encode({1}, 2, 4), Error);  // a zero field beyond 2 bits
}

TEST_CASE("huffman-rle decoding: every truncation and byte change is refused or decodes the count") {
  Generator gen(41);
  std::vector<uint32_t> u = sparse_fields(777, 4, 0.9, 0, gen);
  u.insert(u.end(), 300, 0);  // a run at the end
  const int64_t count = int64_t(u.size());
  const std::string body = rle_encode(u, 4, 0);
  auto err = [&](const std::string& b, int64_t c = 0) {
    return error_of([&] { rle_decode(b, c ? c : count, 4, 0, "f.lbq: op 1"); });
  };
  REQUIRE(rle_decode(body, count, 4, 0, "x") == u);
  for (size_t n = 0; n < body.size(); ++n)
    CHECK(err(body.substr(0, n)).find("f.lbq: op 1: huffman-rle weights: ") == 0);
  CHECK(contains(err(body.substr(0, 3)), "truncated"));
  CHECK(contains(err(body.substr(0, body.size() - 1)), "truncated: the stream"));
  CHECK(contains(err(body + '\0'), "trailing bytes"));
  CHECK(contains(err(body, count + 5000), "truncated: the stream"));
  CHECK(contains(err(body, count - 1), "overruns the layer's"));  // the last run is 1 too long now
  CHECK(contains(err(body, int64_t(1) << 31), "truncated"));      // checked before allocating 2^31 fields
  std::string b = body;
  b[0] = 0;
  CHECK(contains(err(b), "table size 0 is outside [1, "));
  // The table: entry 0 is the smallest nonzero field; turn it into the zero field, a symbol beyond
  // the alphabet, a run class too long for the count, out of order; lengths out of range or incomplete.
  b = body, b[4] = 0;
  CHECK(contains(err(b), "is the zero field"));
  b = body, b[4] = 16 + 11;  // RUN_11: 2048 > 1077 fields
  const std::string too_long = err(b);
  CHECK_MESSAGE((contains(too_long, "neither a field below 16 nor a run class") || contains(too_long, "must increase")),
                too_long);
  b = body, b[5] = 1;  // symbol 257
  CHECK(contains(err(b), "neither a field below 16"));
  b = body, std::swap(b[4], b[9]);
  CHECK(contains(err(b), "must increase"));
  b = body, b[8] = 25;
  CHECK(contains(err(b), "code length 25 is outside [1, 24]"));
  b = body, b[8] = char(b[8] + 1);
  CHECK(contains(err(b), "complete prefix code"));
  if (rle_size(u, 4, 0).stream_bits % 8 != 0) {
    b = body, b.back() = char(uint8_t(b.back()) | 1);
    CHECK(contains(err(b), "unused low bits"));
  }
  // Every truncation of a body: an error (never a read past the end: ASan and the fuzzer check that).
  // Every single-byte change: an error or exactly count fields.
  for (size_t i = 0; i < body.size(); ++i)
    for (int x : {0x01, 0x10, 0x80, 0xff}) {
      b = body, b[i] = char(uint8_t(b[i]) ^ x);
      size_t decoded = size_t(count);
      try {
        decoded = rle_decode(b, count, 4, 0, "x").size();
      } catch (const Error&) {
      }
      CHECK(decoded == size_t(count));
    }
  CHECK_THROWS_AS(rle_decode(body, count, 17, 0, "x"), Error);
  CHECK_THROWS_AS(rle_decode(body, count, 4, 16, "x"), Error);
}

TEST_CASE(".lbq storage 2: run-length coded weights decode bit-identical; odd codings are refused") {
  const std::pair<const char*, Model> models[] = {{"chain", fixtures::chain_model()},
                                                  {"graph", fixtures::graph_model()}};
  for (const auto& [name, source] : models) {
    CAPTURE(name);
    Model plain = source;
    int coded_layers = 0;
    Model coded = plain;
    for (size_t i = 0; i < coded.ops.size(); ++i) {
      WeightOp& l = coded.ops[i].layer;
      if ((coded.ops[i].kind != OpKind::conv && coded.ops[i].kind != OpKind::linear) ||
          l.coding != WeightCoding::twos_complement)
        continue;
      for (size_t j = 0; j < l.weights.size(); ++j)  // prune: 80 % zeros
        if (j % 5) l.weights[j] = 0;
      plain.ops[i].layer.weights = l.weights;
      l.storage = WeightStorage::huffman_rle;
      ++coded_layers;
    }
    REQUIRE(coded_layers >= 1);
    const std::string a = serialize_model(plain), b = serialize_model(coded);
    uint32_t vb = 0;
    std::memcpy(&vb, b.data() + 8, 4);
    CHECK(vb == 4);
    CHECK_THROWS_AS(serialize_model(coded, 3), Error);
    const Model ra = parse_model(a, "a.lbq"), rb = parse_model(b, "b.lbq");
    for (size_t i = 0; i < ra.ops.size(); ++i) {
      CHECK(rb.ops[i].layer.weights == ra.ops[i].layer.weights);
      CHECK(rb.ops[i].layer.storage == coded.ops[i].layer.storage);
    }
    CHECK(serialize_model(rb) == b);
    Engine ea(ra, "a"), eb(rb, "b");
    const int64_t n = 3, image = ea.channels() * ea.height() * ea.width();
    std::vector<uint8_t> px(size_t(n * image));
    for (size_t j = 0; j < px.size(); ++j) px[j] = uint8_t(j * 37 + 11);
    std::vector<float> la(size_t(n * ea.classes())), lb(la.size());
    ea.run(px.data(), n, la.data());
    eb.run(px.data(), n, lb.data());
    CHECK(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)) == 0);
    for (size_t cut = 32; cut < b.size(); cut += 5)
      CHECK(error_of([&] { parse_model(b.substr(0, cut), "cut.lbq"); }).find("cut.lbq: truncated") == 0);
  }
  // The odd coding has no zero weight: storage 2 is refused by the writer and by the reader.
  Model m = fixtures::graph_model();
  Op* odd = nullptr;
  for (Op& op : m.ops)
    if ((op.kind == OpKind::conv || op.kind == OpKind::linear) && op.layer.coding == WeightCoding::odd && !odd)
      odd = &op;
  REQUIRE(odd != nullptr);
  CHECK(zero_field(odd->layer.bits, WeightCoding::odd) == -1);
  CHECK(zero_field(4, WeightCoding::twos_complement) == 0);
  odd->layer.storage = WeightStorage::huffman_rle;
  CHECK(contains(error_of([&] { serialize_model(m); }), "huffman-rle storage needs a coding with a zero weight"));
  // In a file: the layer Huffman-coded, its storage byte set to 2 and the checksum fixed.
  odd->layer.storage = WeightStorage::huffman;
  const std::string good = serialize_model(m);
  const std::string body = huffman_encode(weight_fields(odd->layer), odd->layer.bits);
  const size_t at = good.find(body);
  REQUIRE(at != std::string::npos);
  REQUIRE(good[at - 9] == 1);
  std::string f = good;
  f[at - 9] = 2;
  const uint32_t crc =
      uint32_t(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(f.data() + 32), uInt(f.size() - 32)));
  std::memcpy(&f[24], &crc, 4);
  CHECK(contains(error_of([&] { parse_model(f, "odd.lbq"); }), "odd.lbq: op "));
  CHECK(contains(error_of([&] { parse_model(f, "odd.lbq"); }), "huffman-rle weights need a coding with a zero weight"));
}
