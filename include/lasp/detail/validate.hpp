#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): the argument checks are in driver/validate.hpp.
#include "../driver/validate.hpp"
