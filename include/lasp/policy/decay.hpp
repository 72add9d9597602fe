#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): each decay scheme is in decay/.
#include "../decay/decay.hpp"
