// Canonical Huffman coding of a weight layer's integer codes (spec methods.md §3.4: prune ->
// quantize -> Huffman-code the integer indices per layer; docs/format.md "Huffman-coded weights").
//
// Contract
//   Symbols are the k-bit fields u (0 <= u < 2^bits, bits 1..16) the packed form stores: every
//   distinct value, zero included, is an ordinary symbol.
//   huffman_lengths(freq, max_len): a code length per symbol (0 for a symbol of frequency 0) of an
//     optimal prefix code limited to max_len bits (1..24). One used symbol gets length 1 (the code
//     "0": every code has >= 1 bit, so a stream's size bounds its field count); two or more get a
//     complete code (sum 2^-len = 1). Deterministic: ties in the Huffman merge are
//     broken by node index; when the longest code exceeds max_len, the length counts are adjusted as
//     in JPEG (ITU T.81 Annex K.3: a pair of the longest codes is moved up and a shorter code split,
//     which keeps the code complete), then the lengths are handed out again, shortest to the most
//     frequent symbols (ties: the smaller symbol first).
//   canonical_codes(lengths): the canonical code of each symbol (DEFLATE's rule: codes of one length
//     are consecutive in symbol order, shorter codes first), bits right-aligned.
//   huffman_encode(fields, bits): the coded body (table + bitstream, docs/format.md) of `fields`
//     (each < 2^bits) with lengths from huffman_lengths(.., kMaxHuffmanLength).
//   huffman_decode(body, count, bits, what): the `count` fields the body codes; checks every byte
//     (table order and ranges, a complete code, stream length, zero padding, no trailing bytes)
//     before trusting it and throws lowbit::Error "WHAT: huffman weights: ..." naming the defect;
//     allocates at most count fields (the caller bounds count) and the table (<= 2^16 entries).
//   Zero run-length + Huffman (storage 2, docs/format.md "Run-length Huffman-coded weights"): the
//   fields become symbols of an extended alphabet, a field u != zero as itself and each maximal run
//   of L fields equal to `zero` (the field whose weight is 0) as RUN_j = 2^bits + j, j = floor(log2 L),
//   followed by j extra bits L - 2^j (most significant first); the symbols are Huffman-coded as above
//   (lengths from huffman_lengths(.., kMaxHuffmanLength) over the 2^bits + 32 symbols).
//   rle_size(fields, bits, zero) is rle_encode's byte count and stream bits without encoding.
//   rle_decode(body, count, bits, zero, what) checks the whole body (table, code, run lengths within
//     count, stream length, padding) before allocating the count fields; errors "WHAT: huffman-rle
//     weights: ...".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::deploy {

inline constexpr int kMaxHuffmanLength = 24;

std::vector<uint8_t> huffman_lengths(const std::vector<uint64_t>& freq, int max_len = kMaxHuffmanLength);
std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& lengths);

struct HuffmanSize {
  int64_t symbols = 0;      // distinct fields (table entries)
  int64_t stream_bits = 0;  // bits of the coded fields
  int64_t body_bytes = 0;   // the whole body: 4 + entry_bytes symbols + ceil(stream_bits / 8)
  int64_t entry_bytes = 3;  // bytes of a table entry: 3 (u16 symbol, u8 length), run-length: 5 (u32, u8)
  int64_t table_bits() const { return 32 + 8 * entry_bytes * symbols; }
};
HuffmanSize huffman_size(const std::vector<uint32_t>& fields, int32_t bits);
std::string huffman_encode(const std::vector<uint32_t>& fields, int32_t bits);
std::vector<uint32_t> huffman_decode(std::string_view body, int64_t count, int32_t bits, const std::string& what);

inline constexpr int kMaxRunClass = 31;  // RUN_j for j = 0..31: runs of 1 .. 2^32 - 1 fields
HuffmanSize rle_size(const std::vector<uint32_t>& fields, int32_t bits, uint32_t zero);
std::string rle_encode(const std::vector<uint32_t>& fields, int32_t bits, uint32_t zero);
std::vector<uint32_t> rle_decode(std::string_view body, int64_t count, int32_t bits, uint32_t zero,
                                 const std::string& what);

}  // namespace lowbit::deploy
