// AlexNet variants (§9.6) and VGG-11 for CIFAR (§9.5).
#include "models/common.h"

namespace lowbit::models {

namespace {

std::shared_ptr<Conv2d> conv(int64_t in, int64_t out, int64_t k, Conv2dOptions opt, bool bias, Generator& gen) {
  return std::make_shared<Conv2d>(in, out, k, opt, bias, gen);
}

}  // namespace

std::shared_ptr<Module> build_alexnet(const ModelOptions& o, Generator& gen) {
  const double w = o.width_mult;
  const int64_t c1 = scale_width(64, w), c2 = scale_width(192, w), c3 = scale_width(384, w), c4 = scale_width(256, w),
                c5 = scale_width(256, w);
  auto features = std::make_shared<Sequential>();
  auto m = std::make_shared<Model>("AlexNet");
  if (o.variant == "cifar") {
    // bearpaw/pytorch-classification CIFAR AlexNet: 11x11/4 pad 5 stem, 2x2 pools, Linear(256 * s * s, classes).
    const int64_t size = o.image_size ? o.image_size : 32;
    int64_t s = window_out(size, 11, 4, 5);
    features->push_back(conv(o.in_channels, c1, 11, conv_options(4, 5), true, gen));
    features->push_back(std::make_shared<ReLU>());
    features->push_back(std::make_shared<MaxPool2d>(2));
    s = window_out(s, 2, 2);
    features->push_back(conv(c1, c2, 5, conv_options(1, 2), true, gen));
    features->push_back(std::make_shared<ReLU>());
    features->push_back(std::make_shared<MaxPool2d>(2));
    s = window_out(s, 2, 2);
    features->push_back(conv(c2, c3, 3, conv_options(1, 1), true, gen));
    features->push_back(std::make_shared<ReLU>());
    features->push_back(conv(c3, c4, 3, conv_options(1, 1), true, gen));
    features->push_back(std::make_shared<ReLU>());
    features->push_back(conv(c4, c5, 3, conv_options(1, 1), true, gen));
    features->push_back(std::make_shared<ReLU>());
    features->push_back(std::make_shared<MaxPool2d>(2));
    s = window_out(s, 2, 2);
    LOWBIT_CHECK(s >= 1, "alexnet(cifar): image_size ", size, " is too small");
    m->push_back("features", features);
    m->push_back("flatten", std::make_shared<Flatten>());
    m->push_back("classifier", std::make_shared<Linear>(c5 * s * s, o.num_classes, true, gen));
    return m;
  }
  // torchvision AlexNet ("224"); "64" replaces the 11x11/4 stem by 5x5/2 so a 64-px input keeps 3x3 at the end.
  const bool small = o.variant == "64";
  const int64_t size = o.image_size ? o.image_size : (small ? 64 : 224);
  int64_t s = small ? window_out(size, 5, 2, 2) : window_out(size, 11, 4, 2);
  features->push_back(small ? conv(o.in_channels, c1, 5, conv_options(2, 2), true, gen)
                            : conv(o.in_channels, c1, 11, conv_options(4, 2), true, gen));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(std::make_shared<MaxPool2d>(3, 2));
  s = window_out(s, 3, 2);
  features->push_back(conv(c1, c2, 5, conv_options(1, 2), true, gen));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(std::make_shared<MaxPool2d>(3, 2));
  s = window_out(s, 3, 2);
  features->push_back(conv(c2, c3, 3, conv_options(1, 1), true, gen));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(conv(c3, c4, 3, conv_options(1, 1), true, gen));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(conv(c4, c5, 3, conv_options(1, 1), true, gen));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(std::make_shared<MaxPool2d>(3, 2));
  s = window_out(s, 3, 2);
  LOWBIT_CHECK(s >= 1, "alexnet(", o.variant, "): image_size ", size, " is too small");
  // torchvision's AdaptiveAvgPool2d((6, 6)) is the identity at 224 px; here the classifier takes the map as is.
  const int64_t hidden = scale_width(4096, w);
  auto classifier = std::make_shared<Sequential>();
  classifier->push_back(std::make_shared<Dropout>(0.5, gen.next_u64()));
  classifier->push_back(std::make_shared<Linear>(c5 * s * s, hidden, true, gen));
  classifier->push_back(std::make_shared<ReLU>());
  classifier->push_back(std::make_shared<Dropout>(0.5, gen.next_u64()));
  classifier->push_back(std::make_shared<Linear>(hidden, hidden, true, gen));
  classifier->push_back(std::make_shared<ReLU>());
  classifier->push_back(std::make_shared<Linear>(hidden, o.num_classes, true, gen));
  m->push_back("features", features);
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("classifier", classifier);
  return m;
}

std::shared_ptr<Module> build_alexnet_bn(const ModelOptions& o, Generator& gen) {
  // Distiller alexnet_batchnorm / tensorpack alexnet-dorefa (§9.6b). BN eps 1e-4, TF momentum 0.9 = PyTorch 0.1.
  const double w = o.width_mult;
  const BatchNormOptions bno{.eps = 1e-4, .momentum = 0.1};
  const int64_t c0 = scale_width(96, w), c1 = scale_width(256, w), c2 = scale_width(384, w), c3 = scale_width(384, w),
                c4 = scale_width(256, w), f = scale_width(4096, w);
  LOWBIT_CHECK(c0 % 2 == 0 && c1 % 2 == 0 && c3 % 2 == 0 && c4 % 2 == 0 && c2 % 2 == 0, "alexnet_bn: width_mult ", w,
               " gives odd channel counts for the 2-group convolutions");
  const int64_t size = o.image_size ? o.image_size : 224;
  int64_t s = window_out(size, 12, 4);        // conv0 VALID
  s = window_out(s, 3, 2, 0, /*ceil=*/true);  // pool1
  s = window_out(s, 3, 2, 1);                 // pool2
  s = window_out(s, 3, 2);                    // pool4
  LOWBIT_CHECK(s >= 1, "alexnet_bn: image_size ", size, " is too small");
  auto features = std::make_shared<Sequential>();
  features->push_back(conv(o.in_channels, c0, 12, conv_options(4, 0), true, gen));  // conv0
  features->push_back(std::make_shared<ReLU>());
  features->push_back(conv(c0, c1, 5, conv_options(1, 2, 2), false, gen));  // conv1
  features->push_back(std::make_shared<BatchNorm2d>(c1, bno));
  features->push_back(std::make_shared<MaxPool2d>(3, 2, 0, true));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(conv(c1, c2, 3, conv_options(1, 1), false, gen));  // conv2
  features->push_back(std::make_shared<BatchNorm2d>(c2, bno));
  features->push_back(std::make_shared<MaxPool2d>(3, 2, 1));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(conv(c2, c3, 3, conv_options(1, 1, 2), false, gen));  // conv3
  features->push_back(std::make_shared<BatchNorm2d>(c3, bno));
  features->push_back(std::make_shared<ReLU>());
  features->push_back(conv(c3, c4, 3, conv_options(1, 1, 2), false, gen));  // conv4
  features->push_back(std::make_shared<BatchNorm2d>(c4, bno));
  features->push_back(std::make_shared<MaxPool2d>(3, 2));
  features->push_back(std::make_shared<ReLU>());
  auto classifier = std::make_shared<Sequential>();
  classifier->push_back(std::make_shared<Linear>(c4 * s * s, f, false, gen));  // fc0
  classifier->push_back(std::make_shared<BatchNorm1d>(f, bno));
  classifier->push_back(std::make_shared<ReLU>());
  classifier->push_back(std::make_shared<Linear>(f, f, false, gen));  // fc1
  classifier->push_back(std::make_shared<BatchNorm1d>(f, bno));
  classifier->push_back(std::make_shared<ReLU>());
  classifier->push_back(std::make_shared<Linear>(f, o.num_classes, true, gen));  // fct
  auto m = std::make_shared<Model>("AlexNetBN");
  m->push_back("features", features);
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("classifier", classifier);
  return m;
}

std::shared_ptr<Module> build_vgg11(const ModelOptions& o, Generator& gen, bool batch_norm) {
  // cfg A; conv3x3 pad 1 (+ BN) + ReLU; 'M' = max pool 2x2. Distiller init: kaiming_normal(fan_out) convs,
  // zero biases, Linear normal(0, 0.01).
  const int64_t size = o.image_size ? o.image_size : 32;
  const int64_t cfg[] = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
  auto features = std::make_shared<Sequential>();
  int64_t in = o.in_channels, s = size;
  for (int64_t c : cfg) {
    if (c == 0) {
      features->push_back(std::make_shared<MaxPool2d>(2));
      s = window_out(s, 2, 2);
      continue;
    }
    const int64_t out = scale_width(c, o.width_mult);
    features->push_back(conv(in, out, 3, conv_options(1, 1), true, gen));
    if (batch_norm) features->push_back(std::make_shared<BatchNorm2d>(out));
    features->push_back(std::make_shared<ReLU>());
    in = out;
  }
  LOWBIT_CHECK(s >= 1, "vgg11: image_size ", size, " is too small (five 2x2 pools)");
  auto m = std::make_shared<Model>(batch_norm ? "VGG11BN" : "VGG11");
  m->push_back("features", features);
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("classifier", std::make_shared<Linear>(in * s * s, o.num_classes, true, gen));
  init_conv_net(*m, gen, 0.01);
  return m;
}

}  // namespace lowbit::models
