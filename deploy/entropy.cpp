#include "deploy/entropy.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <queue>
#include <utility>

#include "core/error.h"

namespace lowbit::deploy {
namespace {

std::vector<uint64_t> frequencies(const std::vector<uint32_t>& fields, int32_t bits) {
  LOWBIT_CHECK(bits >= 1 && bits <= 16, "huffman: bits ", bits, " is outside [1, 16]");
  std::vector<uint64_t> freq(size_t(1) << bits, 0);
  for (uint32_t u : fields) {
    LOWBIT_CHECK(u < freq.size(), "huffman: field ", u, " does not fit ", bits, " bits");
    ++freq[u];
  }
  return freq;
}

// A symbol of the run-length alphabet (docs/format.md "Run-length Huffman-coded weights"): a field
// u != zero (symbol u), or RUN_j = 2^bits + j followed by j extra bits (the run's length - 2^j).
struct RleSymbol {
  uint32_t symbol = 0, extra = 0;
  int extra_bits = 0;
};

std::vector<RleSymbol> rle_symbols(const std::vector<uint32_t>& fields, int32_t bits, uint32_t zero) {
  LOWBIT_CHECK(bits >= 1 && bits <= 16, "huffman-rle: bits ", bits, " is outside [1, 16]");
  const uint32_t run0 = uint32_t(1) << bits;
  LOWBIT_CHECK(zero < run0, "huffman-rle: the zero field ", zero, " does not fit ", bits, " bits");
  std::vector<RleSymbol> out;
  for (size_t i = 0; i < fields.size();) {
    LOWBIT_CHECK(fields[i] < run0, "huffman-rle: field ", fields[i], " does not fit ", bits, " bits");
    if (fields[i] != zero) {
      out.push_back({fields[i], 0, 0});
      ++i;
      continue;
    }
    size_t end = i;  // the maximal run of zero fields [i, end)
    while (end < fields.size() && fields[end] == zero) ++end;
    const uint64_t run = end - i;
    LOWBIT_CHECK(run < (uint64_t(1) << (kMaxRunClass + 1)), "huffman-rle: a run of ", run, " zero fields");
    const int j = int(std::bit_width(run)) - 1;
    out.push_back({run0 + uint32_t(j), uint32_t(run - (uint64_t(1) << j)), j});
    i = end;
  }
  return out;
}

std::vector<uint64_t> rle_frequencies(const std::vector<RleSymbol>& symbols, int32_t bits) {
  std::vector<uint64_t> freq((size_t(1) << bits) + kMaxRunClass + 1, 0);
  for (const RleSymbol& s : symbols) ++freq[s.symbol];
  return freq;
}

// A canonical code's decoding table (DEFLATE's rule, docs/format.md): the symbols sorted by (length,
// symbol), and each length's first code and first index. symbol/length: the checked table entries.
struct CanonicalTable {
  std::vector<uint32_t> sorted;
  std::vector<int64_t> first_code, first_index;
  std::vector<uint32_t> per_length;
  int longest = 0;
  CanonicalTable(const std::vector<uint32_t>& symbol, const std::vector<uint8_t>& length,
                 std::vector<uint32_t> per_length_)
      : first_code(kMaxHuffmanLength + 1, 0),
        first_index(kMaxHuffmanLength + 1, 0),
        per_length(std::move(per_length_)) {
    sorted.reserve(symbol.size());
    for (int l = 1; l <= kMaxHuffmanLength; ++l)
      for (size_t i = 0; i < symbol.size(); ++i)
        if (length[i] == l) sorted.push_back(symbol[i]);
    int64_t code = 0, index = 0;
    for (int l = 1; l <= kMaxHuffmanLength; ++l) {
      code = (code + per_length[size_t(l - 1)]) << 1;  // as canonical_codes (per_length[0] = 0)
      first_code[size_t(l)] = code, first_index[size_t(l)] = index;
      index += per_length[size_t(l)];
    }
    longest = *std::max_element(length.begin(), length.end());
  }
  // The next symbol, its code read bit by bit from next_bit(); field i of the error message.
  template <class NextBit>
  uint32_t decode(NextBit&& next_bit, const std::string& where, int64_t i) const {
    int64_t c = 0;
    for (int l = 1;; ++l) {
      c = c << 1 | next_bit();
      if (c >= first_code[size_t(l)] && c - first_code[size_t(l)] < int64_t(per_length[size_t(l)]))
        return sorted[size_t(first_index[size_t(l)] + c - first_code[size_t(l)])];
      // Only the one-symbol code (a '1' bit) gets here without a match: complete codes always match.
      LOWBIT_CHECK(l < longest, where, "field ", i, ": no code of up to ", longest, " bits matches the stream");
    }
  }
};

// After `bit` stream bits decoded the count fields: no trailing byte, zero padding.
void check_stream_end(const std::string& where, std::string_view stream, uint64_t bit, int64_t count) {
  LOWBIT_CHECK((bit + 7) / 8 == stream.size(), where, "trailing bytes: the ", count, " fields take ", (bit + 7) / 8,
               " stream bytes, the body has ", stream.size());
  LOWBIT_CHECK(bit % 8 == 0 || (uint8_t(stream.back()) & (0xffu >> (bit % 8))) == 0, where,
               "the last stream byte's unused low bits are not 0");
}

// The coded body's writer (docs/format.md): little-endian table values, then the stream, each code most
// significant bit first, stream bit t being bit 7 - t % 8 of the stream's byte t / 8.
struct BodyWriter {
  std::string out;
  size_t stream_start = 0;
  uint64_t bit = 0;
  template <class V>
  void put(V v) {
    char b[sizeof v];
    std::memcpy(b, &v, sizeof v);
    out.append(b, sizeof v);
  }
  void start_stream() { stream_start = out.size(), bit = 0; }
  void put_bits(uint32_t v, int n_bits) {
    for (int b = n_bits - 1; b >= 0; --b, ++bit) {
      if (bit % 8 == 0) out.push_back('\0');
      if (v >> b & 1u) out[stream_start + bit / 8] = char(uint8_t(out[stream_start + bit / 8]) | (0x80u >> (bit % 8)));
    }
  }
};
}  // namespace

std::vector<uint8_t> huffman_lengths(const std::vector<uint64_t>& freq, int max_len) {
  LOWBIT_CHECK(max_len >= 1 && max_len <= kMaxHuffmanLength, "huffman_lengths: max_len ", max_len, " is outside [1, ",
               kMaxHuffmanLength, "]");
  std::vector<uint8_t> len(freq.size(), 0);
  std::vector<uint32_t> used;  // symbols with freq > 0
  for (size_t s = 0; s < freq.size(); ++s)
    if (freq[s] > 0) used.push_back(uint32_t(s));
  const size_t n = used.size();
  if (n == 0) return len;
  if (n == 1) {  // one symbol: the code "0" (1 bit a weight: the stream's size bounds the weight count)
    len[used[0]] = 1;
    return len;
  }
  LOWBIT_CHECK(n <= (size_t(1) << max_len), "huffman_lengths: ", n, " symbols need more than ", max_len, " bits");
  // Huffman's merge; nodes 0..n-1 are the leaves, n.. the merged ones; ties by node index.
  std::vector<uint64_t> weight(2 * n - 1);
  std::vector<size_t> parent(2 * n - 1, 0);
  using Item = std::pair<uint64_t, size_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  for (size_t i = 0; i < n; ++i) weight[i] = freq[used[i]], heap.push({weight[i], i});
  for (size_t next = n; next < 2 * n - 1; ++next) {
    const Item a = heap.top();
    heap.pop();
    const Item b = heap.top();
    heap.pop();
    weight[next] = a.first + b.first;  // <= the total count, no overflow for < 2^63 weights
    parent[a.second] = parent[b.second] = next;
    heap.push({weight[next], next});
  }
  std::vector<size_t> depth(2 * n - 1, 0);
  for (size_t i = 2 * n - 1; i-- > 0;)
    if (i != 2 * n - 2) depth[i] = depth[parent[i]] + 1;
  size_t deepest = 0;
  for (size_t i = 0; i < n; ++i) deepest = std::max(deepest, depth[i]);
  std::vector<int64_t> count(std::max<size_t>(deepest, size_t(max_len)) + 1, 0);
  for (size_t i = 0; i < n; ++i) ++count[depth[i]];
  // Length limit (JPEG, ITU T.81 K.3): move the deepest pair up, split a shorter leaf; Kraft stays 1.
  for (size_t i = deepest; i > size_t(max_len); --i)
    while (count[i] > 0) {
      size_t j = i - 2;
      while (j > 0 && count[j] == 0) --j;
      LOWBIT_CHECK(j > 0 && count[i] >= 2, "huffman_lengths: internal error limiting the code lengths");
      count[i] -= 2, count[i - 1] += 1, count[j + 1] += 2, count[j] -= 1;
    }
  // Hand the lengths out, shortest to the most frequent (ties: the smaller symbol).
  std::vector<uint32_t> order = used;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return freq[a] > freq[b]; });
  size_t k = 0;
  for (int l = 1; l <= max_len; ++l)
    for (int64_t c = 0; c < count[size_t(l)]; ++c) len[order[k++]] = uint8_t(l);
  return len;
}

std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& lengths) {
  std::vector<uint32_t> count(kMaxHuffmanLength + 1, 0), next(kMaxHuffmanLength + 2, 0);
  for (uint8_t l : lengths) {
    LOWBIT_CHECK(l <= kMaxHuffmanLength, "canonical_codes: length ", int(l), " exceeds ", kMaxHuffmanLength);
    if (l > 0) ++count[l];
  }
  // DEFLATE's rule: next[1] = 0, next[l] = (next[l-1] + count[l-1]) << 1 (count[0] = 0).
  uint32_t code = 0;
  for (int l = 1; l <= kMaxHuffmanLength; ++l) next[size_t(l)] = code = (code + count[size_t(l - 1)]) << 1;
  std::vector<uint32_t> codes(lengths.size(), 0);
  for (size_t s = 0; s < lengths.size(); ++s)
    if (lengths[s] > 0) codes[s] = next[lengths[s]]++;
  return codes;
}

HuffmanSize huffman_size(const std::vector<uint32_t>& fields, int32_t bits) {
  const std::vector<uint64_t> freq = frequencies(fields, bits);
  const std::vector<uint8_t> len = huffman_lengths(freq);
  HuffmanSize s;
  for (size_t u = 0; u < freq.size(); ++u) {
    s.symbols += freq[u] > 0;
    s.stream_bits += int64_t(freq[u]) * len[u];
  }
  s.body_bytes = 4 + 3 * s.symbols + (s.stream_bits + 7) / 8;
  return s;
}

std::string huffman_encode(const std::vector<uint32_t>& fields, int32_t bits) {
  const std::vector<uint64_t> freq = frequencies(fields, bits);
  const std::vector<uint8_t> len = huffman_lengths(freq);
  const std::vector<uint32_t> code = canonical_codes(len);
  BodyWriter w;
  uint32_t n = 0;
  for (uint64_t f : freq) n += f > 0;
  w.put(n);
  for (size_t u = 0; u < freq.size(); ++u)
    if (freq[u] > 0) w.put(uint16_t(u)), w.put(uint8_t(len[u]));
  w.start_stream();
  for (uint32_t u : fields) w.put_bits(code[u], len[u]);
  return w.out;
}

std::vector<uint32_t> huffman_decode(std::string_view body, int64_t count, int32_t bits, const std::string& what) {
  const std::string where = what + ": huffman weights: ";
  LOWBIT_CHECK(bits >= 1 && bits <= 16 && count >= 1, where, count, " fields of ", bits, " bits cannot be coded");
  LOWBIT_CHECK(body.size() >= 4, where, "truncated: the table size needs 4 bytes, ", body.size(), " left");
  uint32_t n = 0;
  std::memcpy(&n, body.data(), 4);
  const uint64_t max_symbols = std::min<uint64_t>(uint64_t(1) << bits, uint64_t(count));
  LOWBIT_CHECK(n >= 1 && n <= max_symbols, where, "table size ", n, " is outside [1, ", max_symbols, "] (distinct ",
               bits, "-bit fields of ", count, " weights)");
  LOWBIT_CHECK(body.size() - 4 >= 3 * uint64_t(n), where, "truncated: the table of ", n, " entries needs ", 3 * n,
               " bytes, ", body.size() - 4, " left");
  std::vector<uint32_t> symbol(n);
  std::vector<uint8_t> length(n);
  std::vector<uint32_t> per_length(kMaxHuffmanLength + 1, 0);
  uint64_t kraft = 0;  // sum of 2^(24 - len): a complete code has 2^24
  for (uint32_t i = 0; i < n; ++i) {
    uint16_t s = 0;
    std::memcpy(&s, body.data() + 4 + 3 * size_t(i), 2);
    const uint8_t l = uint8_t(body[4 + 3 * size_t(i) + 2]);
    LOWBIT_CHECK(s < (uint32_t(1) << bits), where, "table entry ", i, ": symbol ", s, " does not fit ", bits, " bits");
    LOWBIT_CHECK(i == 0 || s > symbol[i - 1], where, "table entry ", i, ": symbol ", s,
                 " is not above the previous entry's ", i ? symbol[i - 1] : 0, " (symbols must increase)");
    LOWBIT_CHECK(n == 1 ? l == 1 : (l >= 1 && l <= kMaxHuffmanLength), where, "table entry ", i, " (symbol ", s,
                 "): code length ", int(l), n == 1 ? " must be 1 for the only symbol" : " is outside [1, 24]");
    symbol[i] = s, length[i] = l;
    ++per_length[l], kraft += uint64_t(1) << (kMaxHuffmanLength - l);
  }
  LOWBIT_CHECK(kraft == (uint64_t(1) << kMaxHuffmanLength) || n == 1, where,
               "the code lengths do not form a complete prefix code (Kraft sum ", double(kraft) / 0x1p24,
               ", must be 1)");
  const std::string_view stream = body.substr(4 + 3 * size_t(n));
  // Every code has >= 1 bit: check the stream can hold count fields before allocating them.
  LOWBIT_CHECK(uint64_t(count) <= uint64_t(stream.size()) * 8, where, "truncated: ", count, " fields need at least ",
               (count + 7) / 8, " stream bytes, the body has ", stream.size());
  std::vector<uint32_t> out(static_cast<size_t>(count));
  const CanonicalTable table(symbol, length, std::move(per_length));
  const uint64_t total_bits = uint64_t(stream.size()) * 8;
  uint64_t bit = 0;
  for (int64_t i = 0; i < count; ++i)
    out[size_t(i)] = table.decode(
        [&]() -> int64_t {
          LOWBIT_CHECK(bit < total_bits, where, "truncated: the stream of ", stream.size(), " bytes ends in field ", i,
                       " of ", count);
          const int64_t v = (uint8_t(stream[size_t(bit / 8)]) >> (7 - bit % 8)) & 1;
          ++bit;
          return v;
        },
        where, i);
  check_stream_end(where, stream, bit, count);
  return out;
}

HuffmanSize rle_size(const std::vector<uint32_t>& fields, int32_t bits, uint32_t zero) {
  const std::vector<RleSymbol> symbols = rle_symbols(fields, bits, zero);
  const std::vector<uint64_t> freq = rle_frequencies(symbols, bits);
  const std::vector<uint8_t> len = huffman_lengths(freq);
  HuffmanSize s;
  s.entry_bytes = 5;
  for (size_t u = 0; u < freq.size(); ++u) s.symbols += freq[u] > 0;
  for (const RleSymbol& r : symbols) s.stream_bits += len[r.symbol] + r.extra_bits;
  s.body_bytes = 4 + s.entry_bytes * s.symbols + (s.stream_bits + 7) / 8;
  return s;
}

std::string rle_encode(const std::vector<uint32_t>& fields, int32_t bits, uint32_t zero) {
  const std::vector<RleSymbol> symbols = rle_symbols(fields, bits, zero);
  const std::vector<uint64_t> freq = rle_frequencies(symbols, bits);
  const std::vector<uint8_t> len = huffman_lengths(freq);
  const std::vector<uint32_t> code = canonical_codes(len);
  BodyWriter w;
  uint32_t n = 0;
  for (uint64_t f : freq) n += f > 0;
  w.put(n);
  for (size_t s = 0; s < freq.size(); ++s)
    if (freq[s] > 0) w.put(uint32_t(s)), w.put(uint8_t(len[s]));
  w.start_stream();
  for (const RleSymbol& r : symbols) w.put_bits(code[r.symbol], len[r.symbol]), w.put_bits(r.extra, r.extra_bits);
  return w.out;
}

std::vector<uint32_t> rle_decode(std::string_view body, int64_t count, int32_t bits, uint32_t zero,
                                 const std::string& what) {
  const std::string where = what + ": huffman-rle weights: ";
  LOWBIT_CHECK(bits >= 1 && bits <= 16 && count >= 1 && count <= (int64_t(1) << (kMaxRunClass + 1)) - 1 &&
                   zero < (uint32_t(1) << bits),
               where, count, " fields of ", bits, " bits (zero field ", zero, ") cannot be coded");
  LOWBIT_CHECK(body.size() >= 4, where, "truncated: the table size needs 4 bytes, ", body.size(), " left");
  uint32_t n = 0;
  std::memcpy(&n, body.data(), 4);
  const uint32_t run0 = uint32_t(1) << bits;
  const int max_run = int(std::bit_width(uint64_t(count))) - 1;  // RUN_j needs 2^j <= count
  const uint64_t max_symbols = std::min<uint64_t>(uint64_t(run0) + uint64_t(max_run), uint64_t(count));
  LOWBIT_CHECK(n >= 1 && n <= max_symbols, where, "table size ", n, " is outside [1, ", max_symbols, "] (", bits,
               "-bit fields but the zero field, and runs of up to ", count, " fields)");
  LOWBIT_CHECK(body.size() - 4 >= 5 * uint64_t(n), where, "truncated: the table of ", n, " entries needs ",
               5 * uint64_t(n), " bytes, ", body.size() - 4, " left");
  std::vector<uint32_t> symbol(n);
  std::vector<uint8_t> length(n);
  std::vector<uint32_t> per_length(kMaxHuffmanLength + 1, 0);
  uint64_t kraft = 0;  // sum of 2^(24 - len): a complete code has 2^24
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t s = 0;
    std::memcpy(&s, body.data() + 4 + 5 * size_t(i), 4);
    const uint8_t l = uint8_t(body[4 + 5 * size_t(i) + 4]);
    LOWBIT_CHECK(s != zero, where, "table entry ", i, ": symbol ", s, " is the zero field (zeros are coded as runs)");
    LOWBIT_CHECK(s < run0 || s - run0 <= uint32_t(max_run), where, "table entry ", i, ": symbol ", s,
                 " is neither a field below ", run0, " nor a run class ", run0, " + j with 2^j <= ", count);
    LOWBIT_CHECK(i == 0 || s > symbol[i - 1], where, "table entry ", i, ": symbol ", s,
                 " is not above the previous entry's ", i ? symbol[i - 1] : 0, " (symbols must increase)");
    LOWBIT_CHECK(n == 1 ? l == 1 : (l >= 1 && l <= kMaxHuffmanLength), where, "table entry ", i, " (symbol ", s,
                 "): code length ", int(l), n == 1 ? " must be 1 for the only symbol" : " is outside [1, 24]");
    symbol[i] = s, length[i] = l;
    ++per_length[l], kraft += uint64_t(1) << (kMaxHuffmanLength - l);
  }
  LOWBIT_CHECK(kraft == (uint64_t(1) << kMaxHuffmanLength) || n == 1, where,
               "the code lengths do not form a complete prefix code (Kraft sum ", double(kraft) / 0x1p24,
               ", must be 1)");
  const std::string_view stream = body.substr(4 + 5 * size_t(n));
  const CanonicalTable table(symbol, length, std::move(per_length));
  const uint64_t total_bits = uint64_t(stream.size()) * 8;
  // Walks the stream, calling emit(first field, field, how many); returns the bits read. Run once to
  // check everything (nothing allocated), then to fill the count fields.
  auto walk = [&](auto&& emit) {
    uint64_t bit = 0;
    int64_t i = 0;
    auto next_bit = [&]() -> int64_t {
      LOWBIT_CHECK(bit < total_bits, where, "truncated: the stream of ", stream.size(), " bytes ends in field ", i,
                   " of ", count);
      const int64_t b = (uint8_t(stream[size_t(bit / 8)]) >> (7 - bit % 8)) & 1;
      ++bit;
      return b;
    };
    while (i < count) {
      const uint32_t s = table.decode(next_bit, where, i);
      if (s < run0) {
        emit(i, s, int64_t(1));
        ++i;
        continue;
      }
      int64_t run = 1;  // 2^j + the j extra bits
      for (uint32_t t = 0; t < s - run0; ++t) run = run << 1 | next_bit();
      LOWBIT_CHECK(run <= count - i, where, "field ", i, ": a run of ", run, " zero fields overruns the layer's ",
                   count, " fields");
      emit(i, zero, run);
      i += run;
    }
    return bit;
  };
  check_stream_end(where, stream, walk([](int64_t, uint32_t, int64_t) {}), count);
  std::vector<uint32_t> out(static_cast<size_t>(count));
  walk([&](int64_t at, uint32_t u, int64_t k) { std::fill_n(out.begin() + at, k, u); });
  return out;
}

}  // namespace lowbit::deploy
