#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): each schedule is in schedule/.
#include "../schedule/schedule.hpp"
