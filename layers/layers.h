// All of layers/: the Module base, initialisers and every layer family.
#pragma once

#include "layers/activation.h"
#include "layers/container.h"
#include "layers/conv.h"
#include "layers/dropout.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/lstm.h"
#include "layers/module.h"
#include "layers/norm.h"
#include "layers/pooling.h"
