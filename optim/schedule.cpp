#include "optim/schedule.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <numbers>

namespace lowbit::optim {

namespace {

std::string num(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

struct Constant : LRSchedule {
  double factor(double) const override { return 1; }
  std::string str() const override { return "constant"; }
};

struct StepLR : LRSchedule {
  double step_size, gamma;
  StepLR(double s, double g) : step_size(s), gamma(g) {}
  double factor(double e) const override { return std::pow(gamma, std::floor(e / step_size)); }
  std::string str() const override { return "step:" + num(step_size) + ":" + num(gamma); }
};

struct MultiStep : LRSchedule {
  std::vector<double> milestones;
  double gamma;
  MultiStep(std::vector<double> m, double g) : milestones(std::move(m)), gamma(g) {}
  double factor(double e) const override {
    const auto passed = std::upper_bound(milestones.begin(), milestones.end(), e) - milestones.begin();
    return std::pow(gamma, static_cast<double>(passed));
  }
  std::string str() const override {
    std::string s = "multistep:";
    for (size_t i = 0; i < milestones.size(); ++i) {
      if (i > 0) s += ',';
      s += num(milestones[i]);
    }
    return s + ":" + num(gamma);
  }
};

struct Exponential : LRSchedule {
  double gamma;
  explicit Exponential(double g) : gamma(g) {}
  double factor(double e) const override { return std::pow(gamma, e); }
  std::string str() const override { return "exp:" + num(gamma); }
};

struct Cosine : LRSchedule {
  double t_max, eta_min_ratio;
  Cosine(double t, double r) : t_max(t), eta_min_ratio(r) {}
  double factor(double e) const override {
    const double x = std::clamp(e, 0.0, t_max) / t_max;
    return eta_min_ratio + (1 - eta_min_ratio) * 0.5 * (1 + std::cos(std::numbers::pi * x));
  }
  std::string str() const override { return "cosine:" + num(eta_min_ratio) + " (T=" + num(t_max) + ")"; }
};

struct Warmup : LRSchedule {
  std::shared_ptr<LRSchedule> after;
  double warmup_epochs, start_factor;
  Warmup(std::shared_ptr<LRSchedule> s, double w, double start)
      : after(std::move(s)), warmup_epochs(w), start_factor(start) {}
  double factor(double e) const override {
    if (e < warmup_epochs) return start_factor + (1 - start_factor) * std::max(e, 0.0) / warmup_epochs;
    return after->factor(e - warmup_epochs);
  }
  std::string str() const override {
    return "warmup:" + num(warmup_epochs) + ":" + num(start_factor) + "+" + after->str();
  }
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return parts;
}

// Parses a whole string as a finite number or throws naming the spec and the field.
double parse_number(const std::string& spec, const std::string& field, const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double v = text.empty() ? 0 : std::strtod(begin, &end);
  LOWBIT_CHECK(!text.empty() && end == begin + text.size() && std::isfinite(v), "parse_schedule: '", spec, "': ", field,
               " '", text, "' is not a number");
  return v;
}

}  // namespace

std::shared_ptr<LRSchedule> constant() { return std::make_shared<Constant>(); }

std::shared_ptr<LRSchedule> step_lr(double step_size, double gamma) {
  LOWBIT_CHECK(step_size > 0, "step_lr: step_size must be > 0, got ", step_size);
  LOWBIT_CHECK(gamma > 0, "step_lr: gamma must be > 0, got ", gamma);
  return std::make_shared<StepLR>(step_size, gamma);
}

std::shared_ptr<LRSchedule> multistep(std::vector<double> milestones, double gamma) {
  LOWBIT_CHECK(!milestones.empty(), "multistep: no milestones");
  LOWBIT_CHECK(std::is_sorted(milestones.begin(), milestones.end()), "multistep: milestones must be increasing");
  LOWBIT_CHECK(gamma > 0, "multistep: gamma must be > 0, got ", gamma);
  return std::make_shared<MultiStep>(std::move(milestones), gamma);
}

std::shared_ptr<LRSchedule> exponential(double gamma) {
  LOWBIT_CHECK(gamma > 0, "exponential: gamma must be > 0, got ", gamma);
  return std::make_shared<Exponential>(gamma);
}

std::shared_ptr<LRSchedule> cosine(double t_max, double eta_min_ratio) {
  LOWBIT_CHECK(t_max > 0, "cosine: T_max must be > 0, got ", t_max);
  LOWBIT_CHECK(eta_min_ratio >= 0 && eta_min_ratio <= 1, "cosine: eta_min_ratio must be in [0, 1], got ",
               eta_min_ratio);
  return std::make_shared<Cosine>(t_max, eta_min_ratio);
}

std::shared_ptr<LRSchedule> with_warmup(std::shared_ptr<LRSchedule> schedule, double warmup_epochs,
                                        double start_factor) {
  LOWBIT_CHECK(schedule != nullptr, "with_warmup: null schedule");
  LOWBIT_CHECK(warmup_epochs > 0, "with_warmup: warmup_epochs must be > 0, got ", warmup_epochs);
  LOWBIT_CHECK(start_factor >= 0 && start_factor <= 1, "with_warmup: start_factor must be in [0, 1], got ",
               start_factor);
  return std::make_shared<Warmup>(std::move(schedule), warmup_epochs, start_factor);
}

std::shared_ptr<LRSchedule> parse_schedule(const std::string& spec, int64_t total_epochs) {
  // Warmup prefix: "warmup:W[:START]" optionally followed by "+<schedule>".
  if (spec.rfind("warmup:", 0) == 0) {
    const size_t plus = spec.find('+');
    const std::string head = spec.substr(0, plus);
    const auto fields = split(head, ':');
    LOWBIT_CHECK(fields.size() == 2 || fields.size() == 3, "parse_schedule: '", spec,
                 "': expected warmup:EPOCHS[:START_FACTOR][+SCHEDULE]");
    const double w = parse_number(spec, "warmup epochs", fields[1]);
    const double start = fields.size() == 3 ? parse_number(spec, "warmup start factor", fields[2]) : 0.1;
    LOWBIT_CHECK(w > 0, "parse_schedule: '", spec, "': warmup epochs must be > 0, got ", w);
    LOWBIT_CHECK(start >= 0 && start <= 1, "parse_schedule: '", spec, "': warmup start factor must be in [0, 1], got ",
                 start);
    std::shared_ptr<LRSchedule> after = constant();
    if (plus != std::string::npos) {
      const std::string rest = spec.substr(plus + 1);
      LOWBIT_CHECK(!rest.empty(), "parse_schedule: '", spec, "': nothing after '+'");
      LOWBIT_CHECK(rest.rfind("warmup", 0) != 0, "parse_schedule: '", spec, "': warmup cannot follow warmup");
      const auto remaining = total_epochs - static_cast<int64_t>(std::ceil(w));
      LOWBIT_CHECK(remaining > 0 || rest.rfind("cosine", 0) != 0, "parse_schedule: '", spec, "': warmup of ", w,
                   " epochs leaves no epochs of the ", total_epochs, " for the cosine");
      try {
        after = parse_schedule(rest, remaining);
      } catch (const Error& e) {
        throw Error(lowbit::detail::concat("parse_schedule: '", spec, "': after the warmup: ", e.what()));
      }
    }
    return with_warmup(after, w, start);
  }

  const auto fields = split(spec, ':');
  const std::string& kind = fields[0];
  auto expect_fields = [&](size_t lo, size_t hi, const char* form) {
    LOWBIT_CHECK(fields.size() >= lo && fields.size() <= hi, "parse_schedule: '", spec, "': expected ", form);
  };
  if (kind == "constant") {
    expect_fields(1, 1, "constant");
    return constant();
  }
  if (kind == "step") {
    expect_fields(2, 3, "step:STEP_SIZE[:GAMMA]");
    const double s = parse_number(spec, "step size", fields[1]);
    const double gamma = fields.size() == 3 ? parse_number(spec, "gamma", fields[2]) : 0.1;
    LOWBIT_CHECK(s > 0, "parse_schedule: '", spec, "': step size must be > 0, got ", s);
    LOWBIT_CHECK(gamma > 0, "parse_schedule: '", spec, "': gamma must be > 0, got ", gamma);
    return step_lr(s, gamma);
  }
  if (kind == "multistep") {
    expect_fields(2, 3, "multistep:M1,M2,...[:GAMMA]");
    std::vector<double> milestones;
    for (const std::string& m : split(fields[1], ',')) milestones.push_back(parse_number(spec, "milestone", m));
    LOWBIT_CHECK(std::is_sorted(milestones.begin(), milestones.end()), "parse_schedule: '", spec,
                 "': milestones must be increasing");
    const double gamma = fields.size() == 3 ? parse_number(spec, "gamma", fields[2]) : 0.1;
    LOWBIT_CHECK(gamma > 0, "parse_schedule: '", spec, "': gamma must be > 0, got ", gamma);
    return multistep(milestones, gamma);
  }
  if (kind == "exp") {
    expect_fields(2, 2, "exp:GAMMA");
    const double gamma = parse_number(spec, "gamma", fields[1]);
    LOWBIT_CHECK(gamma > 0, "parse_schedule: '", spec, "': gamma must be > 0, got ", gamma);
    return exponential(gamma);
  }
  if (kind == "cosine") {
    expect_fields(1, 2, "cosine[:ETA_MIN_RATIO]");
    const double ratio = fields.size() == 2 ? parse_number(spec, "eta_min ratio", fields[1]) : 0.0;
    LOWBIT_CHECK(ratio >= 0 && ratio <= 1, "parse_schedule: '", spec, "': eta_min ratio must be in [0, 1], got ",
                 ratio);
    LOWBIT_CHECK(total_epochs > 0, "parse_schedule: '", spec, "': cosine needs total epochs > 0, got ", total_epochs);
    return cosine(static_cast<double>(total_epochs), ratio);
  }
  throw Error(lowbit::detail::concat("parse_schedule: '", spec, "': unknown schedule '", kind,
                                     "' (known: constant, step, multistep, exp, cosine, warmup:W+...)"));
}

void apply_schedule(Optimizer& optimizer, const LRSchedule& schedule, double epoch) {
  const double f = schedule.factor(epoch);
  for (ParamGroup& g : optimizer.param_groups()) g.lr = g.initial_lr * f;
}

}  // namespace lowbit::optim
