// Element types. float32 is the default; float64 serves gradient checks and auditing; the integer
// types hold labels, indices and quantized codes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace lowbit {

enum class DType : uint8_t { f32, f64, i32, i8, u8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i8: return 1;
    case DType::u8: return 1;
  }
  return 0;
}

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::i8: return "int8";
    case DType::u8: return "uint8";
  }
  return "?";
}

constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::f64; }

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int8_t>() {
  return DType::i8;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::u8;
}

}  // namespace lowbit

// One line per dtype case:
// clang-format off
// Runs the body with `scalar_t` bound to the C++ type of a floating dtype; other dtypes throw,
// naming the op.
#define LOWBIT_DISPATCH_FLOAT(dtype, op_name, ...)                                              \
  [&] {                                                                                         \
    switch (dtype) {                                                                            \
      case ::lowbit::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }              \
      case ::lowbit::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }             \
      default:                                                                                  \
        throw ::lowbit::Error(std::string(op_name) + ": expected a floating dtype, got " +      \
                              ::lowbit::dtype_name(dtype));                                     \
    }                                                                                           \
  }()

// Same for every dtype.
#define LOWBIT_DISPATCH_ALL(dtype, op_name, ...)                                                \
  [&] {                                                                                         \
    switch (dtype) {                                                                            \
      case ::lowbit::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }              \
      case ::lowbit::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }             \
      case ::lowbit::DType::i32: { using scalar_t = int32_t; return __VA_ARGS__(); }            \
      case ::lowbit::DType::i8: { using scalar_t = int8_t; return __VA_ARGS__(); }              \
      case ::lowbit::DType::u8: { using scalar_t = uint8_t; return __VA_ARGS__(); }             \
    }                                                                                           \
    throw ::lowbit::Error(std::string(op_name) + ": unknown dtype");                            \
  }()
// clang-format on
