// The integer model as a C/C++ header (`lowbit export --c-header FILE`), for targets without a file
// system: compile the model into the program and run it with deploy/runtime/lowbit_runtime.h.
//
// Contract
//   c_header(model, symbol) returns the text of one header (valid C99 and C++) of const arrays:
//     static const unsigned char SYMBOL_lbq[] = {...};   the whole .lbq file, byte for byte
//     static const size_t SYMBOL_lbq_size = N;           (serialize_model): for
//                                                       lowbit_runtime::Model::from_memory
//     per weight layer, a comment (name, kind, shapes, stored bits and coding, output) and copies of
//     its numbers for readers who want them: SYMBOL_LAYER_weights (the decoded integers, int8_t, or
//     int16_t for a layer beyond int8; [K][R][S][C/groups] or [K][F]), SYMBOL_LAYER_scale and
//     SYMBOL_LAYER_offset (double [K]), SYMBOL_LAYER_residual_scale with a residual,
//     SYMBOL_LAYER_pad_values (double [C]) with per-channel padding values. LAYER is the
//     layer's name with every character outside [A-Za-z0-9_] replaced by '_' (then "_opI" appended
//     if two layers would collide). The copies are informational: the runtime reads SYMBOL_lbq only.
//   write_c_header(path, model, symbol) writes it atomically (core/serialize.h write_file_atomic).
// Both validate the model first and throw lowbit::Error when it is invalid or symbol is not a C
// identifier.
#pragma once

#include <string>

#include "deploy/model_file.h"

namespace lowbit::deploy {

std::string c_header(const Model& model, const std::string& symbol);
void write_c_header(const std::string& path, const Model& model, const std::string& symbol);

// A C identifier made from `name` (e.g. a file's stem): characters outside [A-Za-z0-9_] become '_',
// a leading digit gets a '_' before it; "model" when nothing is left.
std::string c_identifier(const std::string& name);

}  // namespace lowbit::deploy
