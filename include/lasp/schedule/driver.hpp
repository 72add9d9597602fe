#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): the driver is in driver/driver.hpp.
#include "../driver/driver.hpp"
