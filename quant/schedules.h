// Lambda schedules for the sinusoidal regularizers (spec §1.3, §2.2). Pure functions of the
// training position t (epoch or step, any real) and the total length T > 0; all positions and
// widths in the options are fractions of T.
//
//   smooth step  f(t; r, s) = 0.5 (1 + tanh((t - r T) / (s T)))
//   WaveQ, three phases (§1.3 spec choice, the paper's figure panel (e)):
//     lambda_w(t)    = Lw f(t; r, s)
//     lambda_beta(t) = Lb (f(t; r, s) - f(t; d, s))        phase 1 ~0, phase 2 plateau Lb, phase 3 ~0
//   WaveQ, official PyTorch script (§1.3 [O]): lambda_w as above, lambda_beta(t) = Lb for all t.
//   SinReQ (§2.2 spec choice): lambda(t) = L for t >= warmup T, 0 before ("constant after warm-up");
//     or the smooth WaveQ ramp L f(t; warmup, s) (SinReQ as WaveQ with a frozen period).
#pragma once

namespace lowbit::quant {

double smooth_step(double t, double center, double width);  // 0.5 (1 + tanh((t - center) / width))

enum class BetaSchedule { bump, constant };

struct WaveQSchedule {
  double lambda_w = 1;        // Lw, plateau of lambda_w
  double lambda_beta = 0.03;  // Lb, plateau of lambda_beta (per-layer mean reduction, §1.3)
  double rise = 0.2;          // r: centre of the rise, fraction of T
  double fall = 0.8;          // d: centre of lambda_beta's fall, fraction of T (>= rise)
  double width = 0.02;        // s: tanh width, fraction of T (> 0)
  BetaSchedule beta_shape = BetaSchedule::bump;
  // Phase 3 with the period snapped (§1.3 phase 3, "the period is effectively frozen"): from t = d T
  // on, each beta is rounded up to its reported bits ceil(beta) and held there, so the weights settle
  // on the grid they are finally rounded to (k = ceil(beta) + 1) rather than on the real-beta one.
  bool snap_beta = false;
};

struct WaveQLambdas {
  double w = 0;
  double beta = 0;
};

WaveQLambdas waveq_lambdas(const WaveQSchedule& schedule, double t, double total);

enum class SinReQRamp { step, smooth };

struct SinReQSchedule {
  double lambda = 1;    // L
  double warmup = 0;    // fraction of T before the regularizer switches on (step) / ramp centre (smooth)
  double width = 0.02;  // tanh width for the smooth ramp, fraction of T
  SinReQRamp ramp = SinReQRamp::step;
};

double sinreq_lambda(const SinReQSchedule& schedule, double t, double total);

}  // namespace lowbit::quant
