// Lambda schedules (spec §1.3, §2.2); see schedules.h.
#include "quant/schedules.h"

#include <cmath>

#include "core/error.h"

namespace lowbit::quant {

double smooth_step(double t, double center, double width) {
  LOWBIT_CHECK(width > 0, "smooth_step: width must be > 0, got ", width);
  return 0.5 * (1 + std::tanh((t - center) / width));
}

WaveQLambdas waveq_lambdas(const WaveQSchedule& s, double t, double total) {
  LOWBIT_CHECK(total > 0, "waveq_lambdas: total must be > 0, got ", total);
  LOWBIT_CHECK(s.width > 0, "waveq_lambdas: width must be > 0, got ", s.width);
  LOWBIT_CHECK(s.rise <= s.fall, "waveq_lambdas: rise ", s.rise, " after fall ", s.fall);
  const double f1 = smooth_step(t, s.rise * total, s.width * total);
  WaveQLambdas out;
  out.w = s.lambda_w * f1;
  if (s.beta_shape == BetaSchedule::constant) {
    out.beta = s.lambda_beta;
  } else {
    const double f2 = smooth_step(t, s.fall * total, s.width * total);
    out.beta = s.lambda_beta * (f1 - f2);
  }
  return out;
}

double sinreq_lambda(const SinReQSchedule& s, double t, double total) {
  LOWBIT_CHECK(total > 0, "sinreq_lambda: total must be > 0, got ", total);
  if (s.ramp == SinReQRamp::smooth) {
    LOWBIT_CHECK(s.width > 0, "sinreq_lambda: width must be > 0, got ", s.width);
    return s.lambda * smooth_step(t, s.warmup * total, s.width * total);
  }
  return t >= s.warmup * total ? s.lambda : 0.0;
}

}  // namespace lowbit::quant
