#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): the host backend is in backend/host/.
#include "../backend/host/backend.hpp"
