// Command-line options of the `lowbit` command: `--key value` / `--key=value` flags and a config
// file of `key = value` lines (`#` starts a comment; keys are the flag names without `--`).
// Flags override the config file, which overrides the defaults. Unknown keys, missing values and
// malformed numbers are errors naming the flag (or the file and line) and what is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lowbit::cli {

struct OptionSpec {
  std::string key;            // flag name without "--"
  std::string default_value;  // "" = unset
  std::string help;
  bool is_switch = false;       // present = "true", takes no value
  bool value_optional = false;  // "--key" alone (last, or before another --flag) = "true"
};

class Options {
 public:
  Options(std::string command, std::vector<OptionSpec> specs);
  // Parses argv (after the sub-command); reads --config FILE first if given.
  void parse(int argc, char** argv);
  void load_config(const std::string& path);
  // Same format from a string (e.g. the config stored in a checkpoint); `name` labels messages.
  void load_config_text(const std::string& text, const std::string& name);
  void set(const std::string& key, const std::string& value, const std::string& where);

  bool has(const std::string& key) const;  // set by default, config or flag
  const std::string& str(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  double real(const std::string& key) const;
  bool flag(const std::string& key) const;
  bool help_requested() const { return help_; }
  // The same command and option table, no value set.
  Options fresh() const { return Options(command_, specs_); }
  std::string usage() const;
  // Every option with a value, `key = value` per line (`key =` for an option emptied over a
  // default): the run folder keeps it as config.txt, and loading it gives the same values.
  std::string to_config() const;

 private:
  const OptionSpec& spec(const std::string& key, const std::string& where) const;
  std::string command_;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> origin_;  // where each value came from, for messages
  bool help_ = false;
};

}  // namespace lowbit::cli
