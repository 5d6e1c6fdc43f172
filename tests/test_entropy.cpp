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
  const std::string e2 = error_of([&] { parse_model(with_edit(at - 9, 2), "m.lbq"); });
  CHECK(e2.find("unknown weight storage 2") != std::string::npos);
}

TEST_CASE("entropy_code: per-layer storage (the smaller), sparsity and the spec formula's terms") {
  Model m = fixtures::graph_model();
  // A pruned-like layer: mostly zero weights (two's complement, 4 bits) codes far below 4 bits each.
  WeightOp* sparse = nullptr;
  for (Op& op : m.ops)
    if ((op.kind == OpKind::conv || op.kind == OpKind::linear) && !sparse && op.layer.numel() >= 64 &&
        op.layer.coding == WeightCoding::twos_complement && op.layer.bits >= 4 && op.layer.out_qmax > 0)
      sparse = &op.layer;
  REQUIRE(sparse != nullptr);
  for (size_t j = 0; j < sparse->weights.size(); ++j) sparse->weights[j] = int16_t(j % 8 == 0 ? 1 : 0);
  sparse->name += ".low";  // counted as a low-order pass: out of N, in the denominator
  const EntropyAccount a = entropy_code(m);
  int64_t n = 0, denominator = 0;
  size_t k = 0;
  for (const Op& op : m.ops) {
    if (op.kind != OpKind::conv && op.kind != OpKind::linear) continue;
    REQUIRE(k < a.layers.size());
    const CodedLayer& c = a.layers[k++];
    const HuffmanSize h = huffman_size(weight_fields(op.layer), op.layer.bits);
    CHECK(c.name == op.layer.name);
    CHECK(c.huffman_bytes == h.body_bytes);
    CHECK(c.packed_bytes == (op.layer.numel() * op.layer.bits + 7) / 8);
    CHECK(c.zeros == std::count(op.layer.weights.begin(), op.layer.weights.end(), int16_t(0)));
    CHECK(op.layer.storage == (h.body_bytes < c.packed_bytes ? WeightStorage::huffman : WeightStorage::packed));
    if (&op.layer == sparse) {
      CHECK(c.low_pass);
      CHECK(c.zeros == sparse->numel() - (sparse->numel() + 7) / 8);
      CHECK(op.layer.storage == WeightStorage::huffman);
    } else {
      n += op.layer.numel();
    }
    denominator += h.stream_bits + 32 + 24 * h.symbols + 32;
  }
  CHECK(k == a.layers.size());
  CHECK(a.formula_weights == n);
  CHECK(a.formula_bits == denominator);
  CHECK(a.formula_ratio() == doctest::Approx(32.0 * double(n) / double(denominator)));
  // The model as coded still reads back to the same weights.
  const Model r = parse_model(serialize_model(m), "m.lbq");
  for (size_t i = 0; i < m.ops.size(); ++i) CHECK(r.ops[i].layer.weights == m.ops[i].layer.weights);
}
