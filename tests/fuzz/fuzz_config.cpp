// libFuzzer harness of the config-file parser: cli/options.h Options::load_config_text with the
// option table of `lowbit train` (cli/trainer.cpp train_option_specs()), the code `--config FILE`
// and --resume (a checkpoint's stored config) run.
//
// Input: the text of a config file. Checked beyond "no crash": every option read as the trainer
// reads it (str, integer, real, flag) returns or throws lowbit::Error, and to_config() (what a run
// stores as config.txt and in its checkpoint) loads back to the same values. The same lines are
// also given as command-line arguments (Options::parse, without --config), whose values must
// survive to_config() too.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "cli/options.h"
#include "cli/trainer.h"
#include "core/error.h"

namespace {

using lowbit::cli::Options;
using lowbit::cli::OptionSpec;

const std::vector<OptionSpec>& specs() {
  static const std::vector<OptionSpec> s = lowbit::cli::train_option_specs();
  return s;
}

void read_all(const Options& o) {
  for (const auto& s : specs()) {
    o.has(s.key);
    o.str(s.key);
    try {
      o.integer(s.key);
    } catch (const lowbit::Error&) {
    }
    try {
      o.real(s.key);
    } catch (const lowbit::Error&) {
    }
    try {
      o.flag(s.key);
    } catch (const lowbit::Error&) {
    }
  }
}

// to_config() must load back (onto the defaults) to the same value of every option.
void check_round_trip(const Options& o, const char* how) {
  Options again("train", specs());
  again.load_config_text(o.to_config(), "config.txt");  // throws (a finding) if it cannot be read back
  for (const auto& s : specs())
    if (again.str(s.key) != o.str(s.key)) {
      std::fprintf(stderr, "fuzz_config: %s: to_config() changes %s from '%s' to '%s'\n", how, s.key.c_str(),
                   o.str(s.key).c_str(), again.str(s.key).c_str());
      std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  {
    Options o("train", specs());
    bool loaded = true;
    try {
      o.load_config_text(text, "fuzz.cfg");
    } catch (const lowbit::Error&) {
      loaded = false;
    }
    if (loaded) {
      read_all(o);
      check_round_trip(o, "config file");
    }
  }
  {
    std::vector<std::string> args;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("--config", 0) != 0) args.push_back(line);  // --config would read a file
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    Options o("train", specs());
    bool parsed = true;
    try {
      o.parse(int(argv.size()), argv.data());
    } catch (const lowbit::Error&) {
      parsed = false;
    }
    if (parsed) check_round_trip(o, "flags");
  }
  return 0;
}
