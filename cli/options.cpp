#include "cli/options.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace lowbit::cli {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

Options::Options(std::string command, std::vector<OptionSpec> specs)
    : command_(std::move(command)), specs_(std::move(specs)) {
  for (const auto& s : specs_)
    if (!s.default_value.empty()) values_[s.key] = s.default_value, origin_[s.key] = "default";
}

const OptionSpec& Options::spec(const std::string& key, const std::string& where) const {
  for (const auto& s : specs_)
    if (s.key == key) return s;
  throw Error(detail::concat("lowbit ", command_, ": unknown option '", key, "' (", where, "); see lowbit ", command_,
                             " --help"));
}

void Options::set(const std::string& key, const std::string& value, const std::string& where) {
  spec(key, where);
  // Every value must survive to_config() -> load_config_text() (config.txt, a checkpoint's config
  // for --resume) unchanged.
  LOWBIT_CHECK(value.find_first_of("#\n") == std::string::npos, "lowbit ", command_, ": ", key, " = '", value, "' (",
               where, "): a value cannot contain '#' or a line break (config files could not store it)");
  LOWBIT_CHECK(value == trim(value), "lowbit ", command_, ": ", key, " = '", value, "' (", where,
               "): a value cannot start or end with white space (config files could not store it)");
  values_[key] = value;
  origin_[key] = where;
}

void Options::load_config(const std::string& path) {
  std::ifstream in(path);
  LOWBIT_CHECK(in.good(), "lowbit ", command_, ": cannot open config file ", path, ": ", std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  load_config_text(text.str(), path);
}

void Options::load_config_text(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    const auto eq = line.find('=');
    const std::string where = detail::concat(name, ":", lineno);
    LOWBIT_CHECK(eq != std::string::npos, "lowbit ", command_, ": ", where, ": expected 'key = value', got '", line,
                 "'");
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    LOWBIT_CHECK(!key.empty(), "lowbit ", command_, ": ", where, ": missing key before '='");
    const OptionSpec& s = spec(key, where);
    set(key, s.is_switch && value.empty() ? "true" : value, where);
  }
}

void Options::parse(int argc, char** argv) {
  // The config file first, so flags override it wherever they stand.
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config") {
      LOWBIT_CHECK(i + 1 < argc, "lowbit ", command_, ": --config needs a file");
      load_config(argv[i + 1]);
    } else if (a.rfind("--config=", 0) == 0) {
      load_config(a.substr(9));
    }
  }
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      help_ = true;
      continue;
    }
    LOWBIT_CHECK(a.rfind("--", 0) == 0 && a.size() > 2, "lowbit ", command_, ": unexpected argument '", a,
                 "' (options are --key value)");
    std::string key = a.substr(2), value;
    const auto eq = key.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) value = key.substr(eq + 1), key.resize(eq);
    if (key == "config") {
      if (!inline_value) ++i;
      continue;
    }
    const std::string where = "--" + key;
    const OptionSpec& s = spec(key, where);
    if (s.is_switch) {
      set(key, inline_value ? value : "true", where);
      continue;
    }
    if (!inline_value) {
      const bool next_is_value = i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0;
      if (s.value_optional && !next_is_value) {
        value = "true";
      } else {
        LOWBIT_CHECK(i + 1 < argc, "lowbit ", command_, ": --", key, " needs a value");
        value = argv[++i];
      }
    }
    set(key, value, where);
  }
}

bool Options::has(const std::string& key) const {
  spec(key, "lookup");
  auto it = values_.find(key);
  return it != values_.end() && !it->second.empty();
}

const std::string& Options::str(const std::string& key) const {
  spec(key, "lookup");
  static const std::string empty;
  auto it = values_.find(key);
  return it == values_.end() ? empty : it->second;
}

int64_t Options::integer(const std::string& key) const {
  const std::string& v = str(key);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  LOWBIT_CHECK(!v.empty() && *end == 0 && errno == 0, "lowbit ", command_, ": ", key, " = '", v, "' (",
               origin_.count(key) ? origin_.at(key) : "unset", ") is not an integer");
  return x;
}

double Options::real(const std::string& key) const {
  const std::string& v = str(key);
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v.c_str(), &end);
  LOWBIT_CHECK(!v.empty() && *end == 0 && errno == 0, "lowbit ", command_, ": ", key, " = '", v, "' (",
               origin_.count(key) ? origin_.at(key) : "unset", ") is not a number");
  return x;
}

bool Options::flag(const std::string& key) const {
  const std::string& v = str(key);
  if (v.empty() || v == "false" || v == "0" || v == "no" || v == "off") return false;
  LOWBIT_CHECK(v == "true" || v == "1" || v == "yes" || v == "on", "lowbit ", command_, ": ", key, " = '", v,
               "' is not a boolean (true/false)");
  return true;
}

std::string Options::usage() const {
  std::ostringstream os;
  os << "usage: lowbit " << command_ << " [--config FILE] [options]\n\noptions:\n";
  for (const auto& s : specs_) {
    std::string name = "--" + s.key + (s.is_switch ? "" : " V");
    os << "  " << name;
    for (size_t i = name.size(); i < 24; ++i) os << ' ';
    os << ' ' << s.help;
    if (!s.default_value.empty() && !s.is_switch) os << " [" << s.default_value << "]";
    os << '\n';
  }
  os << "\nA config file holds 'key = value' lines with the same keys; flags override it.\n";
  return os.str();
}

std::string Options::to_config() const {
  std::ostringstream os;
  for (const auto& s : specs_) {
    auto it = values_.find(s.key);
    if (it == values_.end()) continue;
    if (!it->second.empty())
      os << s.key << " = " << it->second << '\n';
    else if (!s.default_value.empty())  // explicitly emptied: say so, or loading it back restores the default
      os << s.key << (s.is_switch ? " = false" : " =") << '\n';
  }
  return os.str();
}

}  // namespace lowbit::cli
