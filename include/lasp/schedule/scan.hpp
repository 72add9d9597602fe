#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): the schedules are in schedule/schedule.hpp.
#include "schedule.hpp"
