// DCQ (spec §4): the chain of units, the sections, the regression losses and the sections' step.
#include "train/dcq.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "autograd/ops.h"
#include "core/distributed.h"
#include "core/parallel.h"
#include "core/serialize.h"
#include "layers/activation.h"
#include "layers/container.h"
#include "layers/norm.h"

namespace lowbit::train {
namespace {

void collect_chain(Module& m, const std::string& prefix, std::vector<ChainUnit>& out) {
  for (const auto& [local, child] : m.named_children()) {
    const std::string name = join_name(prefix, local);
    if (dynamic_cast<Sequential*>(child.get()) && !child->output_hook())
      collect_chain(*child, name, out);
    else
      out.push_back({name, child});
  }
}

std::string parent_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}

std::string unit_list(const std::vector<ChainUnit>& chain) {
  std::string s;
  for (const auto& u : chain) s += (s.empty() ? "" : ", ") + u.name;
  return s;
}

bool within(const std::string& name, const std::string& unit) {
  return unit.empty() || name == unit ||
         (name.size() > unit.size() && name.compare(0, unit.size(), unit) == 0 && name[unit.size()] == '.');
}

}  // namespace

std::vector<ChainUnit> module_chain(Module& model) {
  std::vector<ChainUnit> chain;
  if (dynamic_cast<Sequential*>(&model))
    collect_chain(model, "", chain);
  else
    chain.push_back({"", model.shared_from_this()});
  return chain;
}

Variable run_chain(const std::vector<ChainUnit>& chain, size_t begin, size_t end, const Variable& x) {
  LOWBIT_CHECK(begin <= end && end <= chain.size(), "run_chain: units [", begin, ", ", end, ") of ", chain.size());
  Variable y = x;
  for (size_t i = begin; i < end; ++i) {
    // BatchNorm -> ReLU of one container as one fused op, exactly as Sequential::forward runs them.
    auto* bn = dynamic_cast<BatchNormBase*>(chain[i].module.get());
    if (bn && i + 1 < end && dynamic_cast<ReLU*>(chain[i + 1].module.get()) &&
        parent_of(chain[i].name) == parent_of(chain[i + 1].name)) {
      y = bn->forward_with_relu(y, *chain[i + 1].module);
      ++i;
      continue;
    }
    y = (*chain[i].module)(y);
  }
  return y;
}

std::vector<Section> make_sections(const std::vector<ChainUnit>& chain, const std::vector<std::string>& cuts) {
  LOWBIT_CHECK(!chain.empty(), "DCQ: the model has no unit");
  std::vector<size_t> after;  // index of the unit each cut follows
  for (const std::string& cut : cuts) {
    int64_t found = -1;
    for (size_t i = 0; i < chain.size(); ++i)
      if (chain[i].name == cut || within(chain[i].name, cut)) found = int64_t(i);  // a container: its last unit
    LOWBIT_CHECK(!cut.empty() && found >= 0, "DCQ: --sections: '", cut,
                 "' is not a unit of the model (units: ", unit_list(chain), ")");
    LOWBIT_CHECK(size_t(found) + 1 < chain.size(), "DCQ: --sections: a cut after '", cut,
                 "' leaves the last section empty");
    after.push_back(size_t(found));
  }
  std::sort(after.begin(), after.end());
  LOWBIT_CHECK(std::adjacent_find(after.begin(), after.end()) == after.end(),
               "DCQ: --sections: two cuts fall at the same place");
  std::vector<Section> sections;
  size_t begin = 0;
  after.push_back(chain.size() - 1);
  for (size_t a : after) {
    sections.push_back({begin, a + 1, chain[begin].name, chain[a].name});
    begin = a + 1;
  }
  return sections;
}

std::vector<std::string> default_cuts(Module& model, const std::vector<int64_t>& image_chw) {
  LOWBIT_CHECK(image_chw.size() == 3, "default_cuts: the image shape is {C, H, W}");
  const auto chain = module_chain(model);
  const bool was_training = model.is_training();
  model.eval();
  std::vector<std::string> cuts;
  {
    NoGradGuard ng;
    DType dtype = DType::f32;
    for (const auto& [_, p] : model.named_parameters()) dtype = p.data().dtype();
    Variable x(Tensor::zeros({1, image_chw[0], image_chw[1], image_chw[2]}, dtype));
    for (size_t i = 0; i < chain.size(); ++i) {
      Variable y = run_chain(chain, i, i + 1, x);
      const auto& in = x.data().shape();
      const auto& out = y.data().shape();
      if (i > 0 && in.size() == 4 && out.size() == 4 && out[2] > 1 && 2 * out[2] <= in[2])
        cuts.push_back(chain[i - 1].name);
      x = y;
    }
  }
  model.train(was_training);
  return cuts;
}

DistillLoss parse_distill_loss(const std::string& name) {
  if (name == "mse") return DistillLoss::mse;
  if (name == "l1") return DistillLoss::l1;
  if (name == "huber") return DistillLoss::huber;
  if (name == "kl") return DistillLoss::kl;
  throw Error("--dcq-loss '" + name + "' is not one of mse, l1, huber, kl");
}

std::string to_string(DistillLoss loss) {
  switch (loss) {
    case DistillLoss::mse: return "mse";
    case DistillLoss::l1: return "l1";
    case DistillLoss::huber: return "huber";
    case DistillLoss::kl: return "kl";
  }
  return "?";
}

Variable distill_loss(const Variable& student, const Tensor& teacher, DistillLoss loss, double huber_delta) {
  LOWBIT_CHECK(student.data().shape() == teacher.shape(), "DCQ: the student's feature map ",
               shape_str(student.data().shape()), " and the teacher's ", shape_str(teacher.shape()),
               " differ in shape");
  const Variable t(teacher);
  switch (loss) {
    case DistillLoss::mse: return mse_loss(student, t);
    case DistillLoss::l1: return mean(abs(student - t));
    case DistillLoss::huber: {  // q = min(|d|, delta): 0.5 q^2 + delta (|d| - q) is Huber's loss at delta
      LOWBIT_CHECK(huber_delta > 0, "DCQ: the Huber delta must be > 0, got ", huber_delta);
      const Variable d = abs(student - t);
      const Variable q = clamp(d, 0.0, huber_delta);
      return mean(q * q * 0.5 + (d - q) * huber_delta);
    }
    case DistillLoss::kl: {  // KL(p_t || p_s) of each sample's features, a mean over samples
      const int64_t n = student.data().shape()[0];
      const Variable ls = log_softmax(reshape(student, {n, -1}), 1);
      const Variable lt = log_softmax(reshape(t, {n, -1}), 1);
      return sum(exp(lt) * (lt - ls)) * (1.0 / double(n));
    }
  }
  throw Error("DCQ: unknown loss");
}

Dcq::Dcq(Module& teacher, Module& student, DcqOptions options, const std::vector<int64_t>& image_chw)
    : teacher_(teacher), options_(std::move(options)) {
  teacher_chain_ = module_chain(teacher);
  student_ = module_chain(student);
  LOWBIT_CHECK(teacher_chain_.size() == student_.size(), "DCQ: the teacher has ", teacher_chain_.size(),
               " units and the student ", student_.size(), ": not the same architecture");
  for (size_t i = 0; i < student_.size(); ++i)
    LOWBIT_CHECK(teacher_chain_[i].name == student_[i].name &&
                     teacher_chain_[i].module->type_name() == student_[i].module->type_name(),
                 "DCQ: unit ", i, " is ", teacher_chain_[i].name, " (", teacher_chain_[i].module->type_name(),
                 ") in the teacher and ", student_[i].name, " (", student_[i].module->type_name(),
                 ") in the student: not the same architecture");
  for (auto& p : teacher.parameters()) p.requires_grad_(false);
  teacher.eval();
  const std::vector<std::string> cuts = options_.cuts.empty() ? default_cuts(teacher, image_chw) : options_.cuts;
  sections_ = make_sections(student_, cuts);
  for (int64_t s : options_.train_sections)
    LOWBIT_CHECK(s >= 0 && size_t(s) < sections_.size(), "DCQ: section ", s + 1, " to train is not one of 1..",
                 sections_.size());
  reset_losses();
}

bool Dcq::trains(size_t section) const {
  if (options_.train_sections.empty()) return section < sections_.size();
  return std::find(options_.train_sections.begin(), options_.train_sections.end(), int64_t(section)) !=
         options_.train_sections.end();
}

int64_t Dcq::section_of(const std::string& name) const {
  for (size_t s = 0; s < sections_.size(); ++s)
    for (size_t u = sections_[s].begin; u < sections_[s].end; ++u)
      if (within(name, student_[u].name)) return int64_t(s);
  return -1;
}

std::vector<optim::ParamGroup> Dcq::section_groups(std::vector<optim::ParamGroup> groups) const {
  std::vector<optim::ParamGroup> kept;
  for (auto& g : groups) {
    LOWBIT_CHECK(g.regularizers.empty(), "DCQ: the parameter group '", g.name,
                 "' carries a regularizer; DCQ trains with its sections' losses only (--reg none, no budget)");
    optim::ParamGroup k = g;
    k.params.clear();
    k.param_names.clear();
    for (size_t i = 0; i < g.params.size(); ++i) {
      const std::string& name = i < g.param_names.size() ? g.param_names[i] : std::string();
      const int64_t s = section_of(name);
      LOWBIT_CHECK(s >= 0, "DCQ: the parameter '", name, "' of group '", g.name, "' belongs to no section");
      if (trains(size_t(s))) k.params.push_back(g.params[i]), k.param_names.push_back(name);
    }
    if (!k.params.empty()) kept.push_back(std::move(k));
  }
  LOWBIT_CHECK(!kept.empty(), "DCQ: the sections to train have no parameter");
  return kept;
}

std::vector<Tensor> Dcq::teacher_features(const Tensor& images, size_t needed) {
  NoGradGuard ng;
  if (teacher_.is_training()) teacher_.eval();
  std::vector<Tensor> a{images};
  Variable x(images);
  for (size_t i = 0; i < needed; ++i) {
    x = run_chain(teacher_chain_, sections_[i].begin, sections_[i].end, x);
    a.push_back(x.data());
  }
  return a;
}

Variable Dcq::section_loss(size_t i, const Variable& out, const std::vector<Tensor>& features,
                           const Tensor& labels) const {
  if (i + 1 == sections_.size()) return cross_entropy(out, labels);
  return distill_loss(out, features[i + 1], options_.loss, options_.huber_delta);
}

StepOutput Dcq::step(Module&, const data::Batch& b) {
  if (b.index == 0) reset_losses();
  std::vector<size_t> todo;
  for (size_t i = 0; i < sections_.size(); ++i)
    if (trains(i)) todo.push_back(i);
  const size_t m = sections_.size();
  // a_0 .. a_k: the inputs of the trained sections and the targets of all but the last.
  const std::vector<Tensor> a = teacher_features(b.images, std::min(todo.back() + 1, m - 1));
  std::vector<double> values(todo.size());
  Tensor logits;
  auto run = [&](int64_t k) {
    const size_t i = todo[size_t(k)];
    const Variable out = run_chain(student_, sections_[i].begin, sections_[i].end, Variable(a[i]));
    const Variable loss = section_loss(i, out, a, b.labels);
    values[size_t(k)] = loss.item();
    if (std::isfinite(values[size_t(k)])) loss.backward();
    if (i + 1 == m) logits = out.data();
  };
  if (options_.parallel)
    parallel_tasks(int64_t(todo.size()), run);
  else
    for (size_t k = 0; k < todo.size(); ++k) run(int64_t(k));
  double total = 0;
  const double n = double(b.labels.numel());
  for (size_t k = 0; k < todo.size(); ++k) {
    total += values[k];
    loss_sum_[todo[k]] += values[k] * n;
    loss_count_[todo[k]] += int64_t(n);
  }
  return {Variable(Tensor::full({}, total, b.images.dtype())), logits};
}

std::vector<double> Dcq::mean_losses() const {
  std::vector<double> r(sections_.size(), std::numeric_limits<double>::quiet_NaN());
  for (size_t i = 0; i < r.size(); ++i)
    if (loss_count_[i] > 0) r[i] = loss_sum_[i] / double(loss_count_[i]);
  return r;
}

void Dcq::reset_losses() {
  loss_sum_.assign(sections_.size(), 0.0);
  loss_count_.assign(sections_.size(), 0);
}

std::vector<double> Dcq::section_losses(data::DataLoader& loader) {
  const bool was_training = !student_.empty() && student_.front().module->is_training();
  for (auto& u : student_) u.module->eval();
  NoGradGuard ng;
  std::vector<double> sum(sections_.size(), 0.0);
  int64_t images = 0;
  loader.begin_epoch(0);
  data::Batch b;
  while (loader.next(b)) {
    const std::vector<Tensor> a = teacher_features(b.images, sections_.size() - 1);
    const double n = double(b.labels.numel());
    for (size_t i = 0; i < sections_.size(); ++i) {
      const Variable out = run_chain(student_, sections_[i].begin, sections_[i].end, Variable(a[i]));
      sum[i] += section_loss(i, out, a, b.labels).item() * n;
    }
    images += b.labels.numel();
  }
  for (auto& u : student_) u.module->train(was_training);
  for (double& s : sum) s = images ? s / double(images) : std::numeric_limits<double>::quiet_NaN();
  return sum;
}

namespace {

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  std::ostringstream os;
  os.precision(9);
  os << x;
  return os.str();
}

std::string json_numbers(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + json_number(v[i]);
  return s + "]";
}

// OUT/sections.jsonl with the lines of earlier epochs kept (a resumed run repeats none).
void write_sections_line(const std::string& path, int64_t epoch, const std::string& line) {
  std::string kept;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) {
    long long e = 0;
    if (std::sscanf(l.c_str(), "{\"epoch\": %lld", &e) == 1 && e < epoch) kept += l + "\n";
  }
  write_file_atomic(path, kept + line + "\n");
}

}  // namespace

FitOptions Dcq::fit_options(FitOptions base, data::DataLoader* test, data::DataLoader* calibration) {
  FitOptions fo = std::move(base);
  if (options_.recalibrate_bn_batches > 0 && test && calibration)
    fo.evaluate = [this, test, calibration](Module& m) {
      unrecalibrated_ = evaluate(m, *test);
      recalibrate_batch_norm(m, *calibration, options_.recalibrate_bn_batches);
      return evaluate(m, *test);
    };
  fo.step = [this](Module& m, const data::Batch& b) { return step(m, b); };
  fo.step_sets_gradients = true;
  auto user = fo.on_epoch;
  const std::string out = fo.out;
  const int verbose = fo.verbose;
  fo.on_epoch = [this, user, out, test, verbose](const EpochRecord& r) {
    std::vector<double> train = mean_losses();
    std::vector<double> held = test ? section_losses(*test) : std::vector<double>{};
    if (dist::size() > 1) {  // data parallelism: the ranks' means (their shares, the test shard), averaged
      for (std::vector<double>* v : {&train, &held}) {
        dist::allreduce_sum(v->data(), int64_t(v->size()));
        for (double& x : *v) x /= double(dist::size());
      }
    }
    if (verbose >= 1) {
      std::string s = "  sections' loss (train";
      s += test ? " / test):" : "):";
      for (size_t i = 0; i < sections_.size(); ++i) {
        char buf[64];
        if (test)
          std::snprintf(buf, sizeof buf, " %.4g/%.4g", train[i], held[i]);
        else
          std::snprintf(buf, sizeof buf, " %.4g", train[i]);
        s += buf;
      }
      if (unrecalibrated_.images) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "; stitched %.2f%% before batch-norm recalibration",
                      100 * unrecalibrated_.accuracy);
        s += buf;
      }
      std::printf("%s\n", s.c_str());
    }
    if (!out.empty() && dist::is_root())
      write_sections_line(out + "/sections.jsonl", r.epoch,
                          detail::concat("{\"epoch\": ", r.epoch, ", \"train_loss\": ", json_numbers(train),
                                         ", \"test_loss\": ", json_numbers(held),
                                         unrecalibrated_.images
                                             ? ", \"test_acc_unrecalibrated\": " + json_number(unrecalibrated_.accuracy)
                                             : std::string(),
                                         "}"));
    if (user) user(r);
  };
  return fo;
}

}  // namespace lowbit::train
