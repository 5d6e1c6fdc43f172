// The quantization options of `lowbit train` / `eval` / `bench` and their mapping onto
// train::QuantSpec (one option = one field of the same name). The method list and help come from
// the registry (quant/methods.h).
#pragma once

#include <vector>

#include "cli/options.h"
#include "train/quant_context.h"

namespace lowbit::cli {

std::vector<OptionSpec> quant_option_specs();

// Whether the options ask for a quantizer or a regularizer.
bool wants_quantization(const Options& o);

// The QuantSpec of the options (checks the bit options against the method's range, naming the option).
train::QuantSpec quant_spec(const Options& o);

// `lowbit methods`: the registry as a table.
int run_methods(int argc, char** argv);

}  // namespace lowbit::cli
