// Umbrella header: everything a program that embeds lowbit needs.
#pragma once
#include "core/parallel.h"
