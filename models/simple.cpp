// Small reference networks: LeNet-5 (§9.3), Distiller simplenet_cifar (§9.1), the SVHN net (§9.2a).
#include "models/common.h"

namespace lowbit::models {

namespace {
void require_image(const char* model, int64_t size, int64_t min_size) {
  LOWBIT_CHECK(size >= min_size, model, ": image_size ", size, " is too small (minimum ", min_size, ")");
}
}  // namespace

std::shared_ptr<Module> build_lenet5(const ModelOptions& o, Generator& gen) {
  const int64_t size = o.image_size ? o.image_size : 28;
  require_image("lenet5", size, 16);
  const int64_t c1 = scale_width(20, o.width_mult), c2 = scale_width(50, o.width_mult),
                f1 = scale_width(500, o.width_mult);
  const int64_t s = window_out(window_out(window_out(window_out(size, 5, 1), 2, 2), 5, 1), 2, 2);
  auto m = std::make_shared<Model>("LeNet5");
  m->push_back("conv1", std::make_shared<Conv2d>(o.in_channels, c1, 5, Conv2dOptions{}, true, gen));
  m->push_back("relu1", std::make_shared<ReLU>());
  m->push_back("pool1", std::make_shared<MaxPool2d>(2));
  m->push_back("conv2", std::make_shared<Conv2d>(c1, c2, 5, Conv2dOptions{}, true, gen));
  m->push_back("relu2", std::make_shared<ReLU>());
  m->push_back("pool2", std::make_shared<MaxPool2d>(2));
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("fc1", std::make_shared<Linear>(c2 * s * s, f1, true, gen));
  m->push_back("relu3", std::make_shared<ReLU>());
  m->push_back("fc2", std::make_shared<Linear>(f1, o.num_classes, true, gen));  // no ReLU after the classifier
  return m;
}

std::shared_ptr<Module> build_simplenet_cifar(const ModelOptions& o, Generator& gen) {
  const int64_t size = o.image_size ? o.image_size : 32;
  require_image("simplenet_cifar", size, 16);
  const int64_t c1 = scale_width(6, o.width_mult), c2 = scale_width(16, o.width_mult);
  const int64_t f1 = scale_width(120, o.width_mult), f2 = scale_width(84, o.width_mult);
  const int64_t s = window_out(window_out(window_out(window_out(size, 5, 1), 2, 2), 5, 1), 2, 2);
  auto m = std::make_shared<Model>("SimpleNetCifar");
  m->push_back("conv1", std::make_shared<Conv2d>(o.in_channels, c1, 5, Conv2dOptions{}, true, gen));
  m->push_back("relu_conv1", std::make_shared<ReLU>());
  m->push_back("pool1", std::make_shared<MaxPool2d>(2));
  m->push_back("conv2", std::make_shared<Conv2d>(c1, c2, 5, Conv2dOptions{}, true, gen));
  m->push_back("relu_conv2", std::make_shared<ReLU>());
  m->push_back("pool2", std::make_shared<MaxPool2d>(2));
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("fc1", std::make_shared<Linear>(c2 * s * s, f1, true, gen));
  m->push_back("relu_fc1", std::make_shared<ReLU>());
  m->push_back("fc2", std::make_shared<Linear>(f1, f2, true, gen));
  m->push_back("relu_fc2", std::make_shared<ReLU>());
  m->push_back("fc3", std::make_shared<Linear>(f2, o.num_classes, true, gen));
  return m;
}

std::shared_ptr<Module> build_svhn_net(const ModelOptions& o, Generator& gen) {
  // pytorch-playground make_layers([32, 32, M, 64, 64, M, 128, 128, M, (256, pad 0), M]): conv, ReLU, Dropout(0.3).
  const int64_t size = o.image_size ? o.image_size : 32;
  require_image("svhn_net", size, 32);
  auto features = std::make_shared<Sequential>();
  int64_t in = o.in_channels, s = size;
  struct Item {
    int64_t channels, padding;  // channels 0 = max pool 2x2
  };
  const Item cfg[] = {{32, 1}, {32, 1}, {0, 0}, {64, 1}, {64, 1}, {0, 0}, {128, 1}, {128, 1}, {0, 0}, {256, 0}, {0, 0}};
  for (const Item& it : cfg) {
    if (it.channels == 0) {
      features->push_back(std::make_shared<MaxPool2d>(2));
      s = window_out(s, 2, 2);
      continue;
    }
    const int64_t out = scale_width(it.channels, o.width_mult);
    features->push_back(std::make_shared<Conv2d>(in, out, 3, conv_options(1, it.padding), true, gen));
    features->push_back(std::make_shared<ReLU>());
    features->push_back(std::make_shared<Dropout>(0.3, gen.next_u64()));
    in = out;
    s = window_out(s, 3, 1, it.padding);
  }
  auto m = std::make_shared<Model>("SVHNNet");
  m->push_back("features", features);
  m->push_back("flatten", std::make_shared<Flatten>());
  m->push_back("classifier",
               std::make_shared<Sequential>(std::make_shared<Linear>(in * s * s, o.num_classes, true, gen)));
  return m;
}

}  // namespace lowbit::models
